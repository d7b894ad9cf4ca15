"""The simulated atmosphere behind the embedded (synthetic) default: the dynamical model
(``atmosphere``), its spectral transforms (``spherical``), land and mountains (``geography``),
and the ERA5-like store built from it (``synthetic``).

Layer 2: imports the root modules only.
"""

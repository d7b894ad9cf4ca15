"""One study per notebook (the world's calibration, the sparsity study, the forecast
scorecard, fusion, assimilation, the ablations), the scorecard schema they write to and the
parameter profiles the notebooks run under (``profiles``).

Layer 6: imports ``downstream`` and below.
"""

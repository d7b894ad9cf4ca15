"""One study per notebook (the world's calibration, the sparsity study, the forecast
scorecard, fusion, assimilation, the ablations) and the scorecard schema they write to.

Layer 6: imports ``downstream`` and below.
"""

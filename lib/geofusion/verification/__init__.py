"""Scores and reference forecasts, independent of any learned model: WeatherBench 2
metrics, block-bootstrap intervals, the baselines (climatology, persistence, damped
persistence, linear regression, the EOF-space linear inverse model, optimal interpolation),
ensembles and CRPS, and comparisons
against the best baseline.

Layer 4, beside ``learning`` (neither imports the other).
"""

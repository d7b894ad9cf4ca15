"""What a trained encoder is used for: embeddings and Table 3.1, diagnostics and
probes, reconstruction from (sparse) observations, latent forecasting and its scores, latent
data assimilation.

Layer 5: imports ``learning``, ``verification`` and below.
"""

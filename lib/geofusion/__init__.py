"""geofusion: multi-modal fusion of weather reanalysis data through contrastive learning.

Layers, each importing only the ones below it (README, "Library"; ``tests/test_layers.py``):

- ``reporting``: plots, widget explorers, HTML reports, the headline, the papermill pipeline;
- ``experiments``: one study per notebook and the scorecard schema;
- ``downstream``: what a trained encoder is used for (embeddings, probes, reconstruction,
  latent forecasting, latent assimilation);
- ``learning`` and, beside it, ``verification``: training (augmentations, losses, objectives,
  decoders, the loop, checkpoints, distributed training, the model cache) / scores, intervals
  and the reference baselines;
- ``data``: stores, preparation, datasets, sparse observations;
- ``world``: the simulated atmosphere behind the synthetic default;
- ``models``: networks;
- the root: ``variables``, ``grids``, ``io``, ``errors``, ``reproducibility``.

Array layout everywhere: ``(time or batch, channel, lat, lon)``, float32, channels in
``geofusion.variables.VARIABLES`` order, latitude ascending (south to north), longitude 0..360 east.
"""

__version__ = "0.1.0"

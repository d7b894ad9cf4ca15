"""How encoders and decoders are trained: augmentations, losses, the training objectives
(``methods``, ``fusion_methods``), decoders on frozen encoders, the training loop and its
checkpoints, data-parallel training, and the model cache (``model_cache``) the notebooks share.

Layer 4, beside ``verification`` (neither imports the other).
"""

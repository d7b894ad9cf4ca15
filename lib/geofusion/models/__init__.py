"""Networks, each a plain ``nn.Module`` that knows nothing of data files or training:
the ResNet encoder and decoders (``resnet``), the fusion encoders and their operators, the
latent DDPM (``diffusion``) and the closed-form ridge decoder.

Layer 1: imports only the root modules (``geofusion.variables``, ...).
"""

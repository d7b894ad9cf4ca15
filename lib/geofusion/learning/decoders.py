"""Decoders from a representation back to the grid (report chapter 4, steps 3 and 5).

A decoder on a contrastive latent is not the autoencoder's trivial by-product: the encoder
never saw a reconstruction loss, and may have discarded what the fields need (report 2.4).
Four ways to get one:

- :class:`FrozenEncoderDecoder` trains a :class:`geofusion.models.resnet.FieldDecoder` on the
latents
  of an already trained method whose encoder stays fixed (fed the method's own inference view,
  or with ``view="native"`` the grid as given): how much of the fields the representation
  keeps, or a new decoder for another grid.
- Three schemes train the decoder *jointly* with a contrastive encoder (Barlow Twins by default,
  :func:`build_joint`): :class:`KadeethumJointDecoder` (contrastive outer batch, reconstruction
  of the non-augmented days of an inner batch), :class:`QuetinJointDecoder` (``alpha L_enc +
  (1 - alpha) L_dec`` with a decaying ``alpha``) and :class:`YaoDippelJointDecoder` (contrastive
  pairs with and without masks, reconstruction from a masked input).

The latents are always those the rest of the project uses,
:func:`geofusion.learning.methods.embed_observed` (the method's inference view, plus the mask
channel for
methods trained on sparse views), and every model here reconstructs the native grid with
``forward(fields, observed=None)``, so :func:`reconstruct` scores them all alike.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from geofusion.data.observations import MASK_KINDS, Observation, make_mask
from geofusion.learning.methods import (
    build_method,
    embed_observed,
    observe,
    reconstruction_latitude_weights,
)
from geofusion.models.resnet import FieldDecoder

__all__ = ["FROZEN_VIEWS", "FrozenEncoderDecoder", "reconstruction_error", "reconstruct",
           "JOINT_SCHEMES", "ALPHA_SCHEDULES", "JointContrastiveDecoder", "KadeethumJointDecoder",
           "QuetinJointDecoder", "YaoDippelJointDecoder", "build_joint"]


#: Inputs :class:`FrozenEncoderDecoder` can feed its encoder: "inference" = the method's own
#: inference view (``method.embed``: the canonical 72 x 144 view for the contrastive methods,
#: the fields themselves for the autoencoder); "native" = the encoder straight on the grid of
#: the fields it is given (for a bare encoder, or to probe an encoder off its training input).
FROZEN_VIEWS: tuple[str, ...] = ("inference", "native")


class FrozenEncoderDecoder(nn.Module):
    """A decoder trained on the latents of a frozen, trained method (or bare encoder).

    ``loss(batch)`` is the mean squared error of ``decoder(latent(x))`` against
    ``batch[target_index]`` (``batch = (x, ...)``, x ``(B, C, H, W)`` standardised; the target
    is ``x`` itself by default, or e.g. the same day on a finer grid with ``target_index=1``).
    The latent depends on ``view`` (:data:`FROZEN_VIEWS`):

    - ``"inference"`` (default): ``method.embed(observe(method, x, observed))``, i.e.
      :func:`geofusion.learning.methods.embed_observed`, the representation the rest of the project
      uses (the encoder on the method's own inference view, plus the mask channel for methods
      trained on sparse views);
    - ``"native"``: ``encoder(observe(method, x, observed))``, the encoder on the grid of
      ``x`` as given, without the method's view.

    No gradient reaches the method and it stays in eval mode (batch-norm statistics frozen), so
    :func:`geofusion.learning.training.fit` trains only the decoder. Like the methods, :meth:`embed`
    takes what :func:`geofusion.learning.methods.observe` builds (``mask_channel`` is the method's)
    and
    ``forward(fields, observed=None)`` returns the reconstruction, so
    :func:`reconstruct`, :func:`geofusion.downstream.embeddings.encode_series` and
    :func:`geofusion.downstream.forecasting.fit_latent_forecaster` take this model as they take a
    method.

    Args:
        method: a trained method (``encoder`` and ``embed``, e.g. from
            :func:`geofusion.learning.methods.build_method` or
            :func:`geofusion.learning.fusion_methods.build_fusion_method`), or a bare encoder module
            ``(B, C, H, W) -> (B, latent_dim)`` (then ``view`` must be "native": a bare encoder
            has no inference view).
        decoder: ``(B, latent_dim) -> (B, C', H', W')``, e.g.
            :class:`geofusion.models.resnet.FieldDecoder` built for the target grid.
        view: "inference" or "native" (see above).
        target_index: which element of the batch is the target (0 = the input itself).
        latitude_weights: None (plain MSE, the report's) or ``(H,)`` cell-area weights of
            mean 1 (:func:`geofusion.data.eof.area_weights`): the latitude-weighted MSE the
            scores use (:func:`reconstruction_error`).
        observation: None (latents of complete days) or the settings of a
            :class:`geofusion.data.observations.Observation`: each training batch is observed
            through its masks (drawn with the loop's generator) before encoding, so the
            decoder learns to decode the latents of *observed* days (for a sparse-view
            encoder, whose latents of sparse input sit elsewhere than those of complete days).

    Example:
        >>> from geofusion.learning.methods import build_method
        >>> from geofusion.models.resnet import FieldDecoder
        >>> method = build_method("barlow_twins", latent_dim=8, width=2, proj_dim=4,
        ...                       proj_hidden_dim=8)
        >>> model = FrozenEncoderDecoder(method, FieldDecoder(8, 5, (32, 64), width=2))
        >>> model(torch.randn(2, 5, 32, 64)).shape  # encoder saw the 72 x 144 canonical view
        torch.Size([2, 5, 32, 64])
    """

    def __init__(self, method: nn.Module, decoder: nn.Module, view: str = "inference",
                 target_index: int = 0, latitude_weights: Any = None,
                 observation: dict[str, Any] | None = None) -> None:
        super().__init__()
        if view not in FROZEN_VIEWS:
            raise ValueError(f"unknown view {view!r}; choose one of {FROZEN_VIEWS}")
        is_method = hasattr(method, "embed") and hasattr(method, "encoder")
        if view == "inference" and not is_method:
            raise ValueError(f"{type(method).__name__} is a bare encoder with no inference view; "
                             "pass the trained method (with encoder and embed), or "
                             "view='native' to feed the encoder the fields as given")
        self.method = method
        self.decoder = decoder
        self.view = view
        self.target_index = int(target_index)
        self.latitude_weights: Tensor | None
        self.register_buffer("latitude_weights", None if latitude_weights is None else
                             torch.as_tensor(np.asarray(latitude_weights, dtype=np.float32)))
        self.observation = None if observation is None else Observation.from_dict(observation)
        for parameter in self.method.parameters():
            parameter.requires_grad_(False)
        self.method.eval()

    @property
    def encoder(self) -> nn.Module:
        """The frozen encoder ``(B, C, h, w) -> (B, latent_dim)``."""
        return getattr(self.method, "encoder", self.method)

    @property
    def mask_channel(self) -> bool:
        """Whether the encoder takes a mask channel (that of the method)."""
        return bool(getattr(self.method, "mask_channel", False))

    def train(self, mode: bool = True) -> FrozenEncoderDecoder:
        super().train(mode)
        self.method.eval()
        return self

    def embed(self, inputs: Tensor) -> Tensor:
        """Latents (B, latent_dim) of ``inputs`` (what :func:`~geofusion.learning.methods.observe`
        builds from (B, C, H, W) fields) through the frozen method, on :attr:`view`."""
        with torch.no_grad():
            if self.view == "inference":
                return self.method.embed(inputs)
            return self.encoder(inputs)

    def forward(self, fields: Tensor, observed: Tensor | None = None) -> Tensor:
        """Reconstruction (B, C', H', W') of ``fields`` (B, C, H, W) seen where ``observed``
        (bool (B, H, W); None = everywhere), standardised units."""
        return self.decoder(self.embed(observe(self, fields, observed)))

    def loss(self, batch: tuple[Tensor, ...], generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        target = batch[self.target_index]
        fields, observed = batch[0], None
        if self.observation is not None:
            if generator is None:
                raise ValueError("a decoder trained on observed latents needs the generator "
                                 "of the training loop to draw its masks")
            fields, observed = self.observation(fields, generator)
        return reconstruction_error(self(fields, observed), target, self.latitude_weights), {}


def reconstruction_error(reconstruction: Tensor, target: Tensor,
                         latitude_weights: Tensor | None = None) -> Tensor:
    """Mean squared error of ``reconstruction`` against ``target`` (B, C, H, W); with
    ``latitude_weights`` ``(H,)`` (cell-area weights of mean 1,
    :func:`geofusion.data.eof.area_weights`) the latitude-weighted one,
    ``mean_{b,c,i,j} w_i (x_hat - x)^2``, every variable counted alike (in the anomaly space
    each is scaled to unit training variance, so the terms are balanced).

    Example:
        >>> x = torch.zeros(1, 1, 2, 1)
        >>> float(reconstruction_error(x + 1, x, torch.tensor([0.5, 1.5])))
        1.0
        >>> top = torch.tensor([[[[1.0], [0.0]]]])
        >>> float(reconstruction_error(top, x, torch.tensor([0.5, 1.5])))
        0.25
    """
    error = (reconstruction.float() - target.float()).pow(2)
    if latitude_weights is None:
        return error.mean()
    if latitude_weights.shape[0] != error.shape[-2]:
        raise ValueError(f"{latitude_weights.shape[0]} latitude_weights for fields with "
                         f"{error.shape[-2]} latitudes")
    return (error * latitude_weights.to(error.device)[:, None]).mean()


@torch.no_grad()
def reconstruct(model: nn.Module, fields: np.ndarray | Tensor, observed: Tensor | None = None,
                batch_size: int = 256) -> np.ndarray:
    """``model(fields, observed)`` over ``fields`` (N, C, H, W) in batches, in eval mode.

    ``model`` is any module whose ``forward(fields, observed)`` returns the reconstruction
    (:class:`FrozenEncoderDecoder`, the joint schemes); ``observed`` is a bool (N, H, W) mask or
    None. Without a mask ``model(fields)`` is called, so an autoencoder
    (:class:`geofusion.learning.methods.AutoencoderMethod`) is reconstructed the same way.
    Returns float32 numpy (N, C, H, W), standardised units.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    fields = torch.as_tensor(np.asarray(fields) if not isinstance(fields, Tensor) else fields,
                             dtype=torch.float32)
    chunks = []
    for start in range(0, len(fields), batch_size):
        batch = fields[start:start + batch_size].to(device)
        mask = None if observed is None else observed[start:start + batch_size].to(device)
        output = model(batch) if mask is None else model(batch, mask)
        chunks.append(output.float().cpu())
    model.train(was_training)
    return torch.cat(chunks).numpy()


# --------------------------------------------------------------------------------------------
# Decoders trained jointly with a contrastive encoder (report section 2.4)
# --------------------------------------------------------------------------------------------

JOINT_SCHEMES: tuple[str, ...] = ("kadeethum", "quetin", "yao_dippel")
ALPHA_SCHEDULES: tuple[str, ...] = ("linear", "exponential")


def _batch_labels(batch: tuple[Tensor, ...]) -> Tensor | None:
    return batch[1] if len(batch) > 1 else None


class JointContrastiveDecoder(nn.Module):
    """A contrastive method and a field decoder trained together (base of the joint schemes).

    The representation is the contrastive method's: :meth:`embed` is ``method.embed`` (the
    encoder on the method's deterministic inference view), and :meth:`forward` decodes it to the
    native grid, ``decoder(embed_observed(method, fields, observed))``, so
    :func:`reconstruct` and every consumer of a method's latents (evaluation, forecasting) use
    these models as they use the others. Subclasses define :meth:`loss`; its metrics dict holds
    each term of the objective (``contrastive``, ``reconstruction``, ...) and the weight in
    use, so :func:`geofusion.learning.training.fit`'s history shows both sides of the trade-off.

    Args:
        method: a :class:`geofusion.learning.methods.ContrastiveMethod` (``encoder``, ``projector``,
            ``augmentation``, ``objective``), e.g. ``build_method("barlow_twins", ...)``.
        decoder: ``(B, latent_dim) -> (B, C, H, W)`` on the native grid, e.g.
            :class:`geofusion.models.resnet.FieldDecoder`.
        latitude_weights: None (the reconstruction term is the plain MSE, the report's) or
            ``(H,)`` cell-area weights of mean 1 (:func:`geofusion.data.eof.area_weights`):
            the reconstruction term is then the latitude-weighted MSE of the scores,
            :func:`reconstruction_error` (issue 23; every variable an anomaly of unit training
            variance in the anomaly space, so the five terms weigh alike).
    """

    def __init__(self, method: nn.Module, decoder: nn.Module,
                 latitude_weights: Any = None) -> None:
        super().__init__()
        for attribute in ("encoder", "projector", "objective", "inference_view"):
            if not hasattr(method, attribute):
                raise ValueError(
                    f"the joint schemes need a contrastive method (with {attribute!r}), got "
                    f"{type(method).__name__}; build one with build_method('barlow_twins', ...)")
        self.method = method
        self.decoder = decoder
        self.latitude_weights: Tensor | None
        self.register_buffer("latitude_weights", None if latitude_weights is None else
                             torch.as_tensor(np.asarray(latitude_weights, dtype=np.float32)))

    def reconstruction_term(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        """The reconstruction term of the objective: :func:`reconstruction_error` with this
        model's ``latitude_weights`` (the plain MSE when None)."""
        return reconstruction_error(reconstruction, target, self.latitude_weights)

    @property
    def encoder(self) -> nn.Module:
        """The contrastive method's encoder ``(B, C, h, w) -> (B, latent_dim)``."""
        return self.method.encoder

    @property
    def mask_channel(self) -> bool:
        """Whether the encoder takes a mask channel (that of the contrastive method)."""
        return bool(getattr(self.method, "mask_channel", False))

    def inference_view(self, fields: Tensor) -> Tensor:
        """The contrastive method's deterministic inference view of ``fields`` (B, C, H, W)."""
        return self.method.inference_view(fields)

    def embed(self, fields: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, latent_dim): ``encoder(inference_view(fields))``."""
        return self.method.embed(fields)

    def forward(self, fields: Tensor, observed: Tensor | None = None) -> Tensor:
        """Reconstruction (B, C, H, W) of ``fields`` seen where ``observed`` (None = all),
        standardised units, on the grid of the decoder."""
        return self.decoder(embed_observed(self.method, fields, observed))

    def _encode(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """Latents of several inputs of equal shape in one encoder pass (one set of batch-norm
        statistics), split back in the order given."""
        latents = self.method.encoder(torch.cat(inputs))
        return latents.split([len(x) for x in inputs])

    def _contrastive(self, h1: Tensor, h2: Tensor, labels: Tensor | None) -> Tensor:
        """The method's objective on the projections of two batches of latents (one projector
        pass, as :meth:`geofusion.learning.methods.ContrastiveMethod.loss` does)."""
        z1, z2 = self.method.projector(torch.cat([h1, h2])).float().chunk(2)
        return self.method.objective(z1, z2, labels)

    def loss(self, batch: tuple[Tensor, ...], generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError


class KadeethumJointDecoder(JointContrastiveDecoder):
    """Kadeethum et al. (2022): contrastive loss on the outer batch, reconstruction of the
    *non-augmented* samples of a random inner batch.

    On an outer batch ``x`` of B days (the batch :func:`geofusion.learning.training.fit` yields;
    512 in
    the paper), the method's two augmented views give the contrastive term; ``inner_batch``
    days ``x_I`` (32 in the paper) drawn without replacement with ``generator`` (after the
    views) are encoded through the deterministic inference view, i.e. without augmentation,
    and decoded back to the native grid:

        L = L_con(view1(x), view2(x)) + w * MSE(decoder(embed(x_I)), x_I).

    Both terms train the encoder; only the second trains the decoder.

    Args:
        method, decoder, latitude_weights: see :class:`JointContrastiveDecoder`.
        inner_batch: days reconstructed per step, ``1 <= inner_batch <= B``.
        decoder_weight: ``w >= 0``.
    """

    def __init__(self, method: nn.Module, decoder: nn.Module, inner_batch: int = 32,
                 decoder_weight: float = 1.0, latitude_weights: Any = None) -> None:
        super().__init__(method, decoder, latitude_weights)
        if int(inner_batch) != inner_batch or inner_batch < 1:
            raise ValueError(f"inner_batch must be a positive integer, got {inner_batch}")
        if not decoder_weight >= 0:
            raise ValueError(f"decoder_weight must be >= 0, got {decoder_weight}")
        self.inner_batch = int(inner_batch)
        self.decoder_weight = float(decoder_weight)

    def inner_indices(self, batch_size: int, generator: torch.Generator | None) -> Tensor:
        """The ``inner_batch`` positions (int64, on the generator's device) of the days to
        reconstruct in an outer batch of ``batch_size``."""
        if self.inner_batch > batch_size:
            raise ValueError(
                f"inner_batch={self.inner_batch} exceeds the outer batch of {batch_size} days; "
                "lower inner_batch or raise the batch size")
        device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(batch_size, generator=generator, device=device)
        return order[:self.inner_batch]

    def loss(self, batch: tuple[Tensor, ...], generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        fields = batch[0]
        view1, view2 = self.method.make_views(fields, generator)
        contrastive = self._contrastive(*self._encode(view1, view2), _batch_labels(batch))
        inner = fields[self.inner_indices(len(fields), generator).to(fields.device)]
        reconstruction = self.reconstruction_term(self.decoder(self.method.embed(inner)), inner)
        loss = contrastive + self.decoder_weight * reconstruction
        return loss, {"contrastive": contrastive.item(), "reconstruction": reconstruction.item(),
                      "decoder_weight": self.decoder_weight}


class QuetinJointDecoder(JointContrastiveDecoder):
    """Quetin et al. (2025): a convex combination of the two losses whose weight decays.

        L = alpha * L_enc + (1 - alpha) * L_dec,

    ``L_enc`` the method's contrastive loss on two augmented views, ``L_dec`` the mean squared
    error of the decoder's reconstruction of the native-grid fields from the latent of their
    inference view (the three inputs share one encoder pass). ``alpha`` moves from the
    encoder (``alpha_start``) towards the decoder (``alpha_end``) over the epochs;
    :func:`geofusion.learning.training.fit` sets it through :meth:`on_epoch_start`:

    - ``"linear"``: ``alpha_k = alpha_start + (alpha_end - alpha_start) * k / (E - 1)``;
    - ``"exponential"`` (geometric): ``alpha_k = alpha_start * (alpha_end / alpha_start) **
      (k / (E - 1))``, a constant factor per epoch (needs both ends > 0),

    for epoch ``k = 0 .. E - 1`` of ``E`` (``alpha_start`` when ``E = 1``), so the first epoch
    uses ``alpha_start`` and the last ``alpha_end``. ``alpha`` may also be set by hand.

    Args:
        method, decoder, latitude_weights: see :class:`JointContrastiveDecoder`.
        alpha_start, alpha_end: weights of the contrastive term, in [0, 1].
        schedule: one of :data:`ALPHA_SCHEDULES`.
    """

    def __init__(self, method: nn.Module, decoder: nn.Module, alpha_start: float = 0.9,
                 alpha_end: float = 0.1, schedule: str = "linear",
                 latitude_weights: Any = None) -> None:
        super().__init__(method, decoder, latitude_weights)
        for name, value in (("alpha_start", alpha_start), ("alpha_end", alpha_end)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if schedule not in ALPHA_SCHEDULES:
            raise ValueError(f"unknown alpha schedule {schedule!r}; choose one of "
                             f"{ALPHA_SCHEDULES}")
        if schedule == "exponential" and min(alpha_start, alpha_end) <= 0:
            raise ValueError("the exponential alpha schedule needs alpha_start and alpha_end > 0 "
                             f"(got {alpha_start}, {alpha_end}); use schedule='linear' to reach 0")
        self.alpha_start = float(alpha_start)
        self.alpha_end = float(alpha_end)
        self.schedule = schedule
        self.alpha = self.alpha_start

    @property
    def alpha(self) -> float:
        """Current weight of the contrastive term, in [0, 1]."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        if not 0 <= value <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {value}")
        self._alpha = float(value)

    def alpha_at(self, epoch: int, epochs: int) -> float:
        """The scheduled ``alpha`` of epoch ``epoch`` (0-based) of ``epochs``."""
        if epochs < 1 or not 0 <= epoch < epochs:
            raise ValueError(f"need 0 <= epoch < epochs, got epoch={epoch}, epochs={epochs}")
        t = epoch / (epochs - 1) if epochs > 1 else 0.0
        if self.schedule == "linear":
            return self.alpha_start + (self.alpha_end - self.alpha_start) * t
        return self.alpha_start * (self.alpha_end / self.alpha_start) ** t

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called by :func:`geofusion.learning.training.fit` before each epoch: set the scheduled
        alpha."""
        self.alpha = self.alpha_at(epoch, epochs)

    def loss(self, batch: tuple[Tensor, ...], generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        fields = batch[0]
        view1, view2 = self.method.make_views(fields, generator)
        h1, h2, h_canonical = self._encode(view1, view2, self.method.inference_view(fields))
        contrastive = self._contrastive(h1, h2, _batch_labels(batch))
        reconstruction = self.reconstruction_term(self.decoder(h_canonical), fields)
        loss = self.alpha * contrastive + (1 - self.alpha) * reconstruction
        return loss, {"contrastive": contrastive.item(), "reconstruction": reconstruction.item(),
                      "alpha": self.alpha}


class YaoDippelJointDecoder(JointContrastiveDecoder):
    """Yao et al. (2022) / Dippel et al. (2021): contrastive pairs with and without masks, and a
    decoder that reconstructs from a masked input.

    Two masks ``M1, M2`` per day (:func:`geofusion.data.observations.make_mask`, ``mask_ratio`` of
    the
    native grid missing, drawn first from ``generator``) give the masked fields
    ``x_k = observe(x, M_k)`` (missing points 0, the standardised training mean, plus the mask
    channel for methods that take one: the project's convention). The two augmented views
    ``v_k = aug_k(x)`` and their masked versions ``m_k = aug_k(x_k)`` share their random crop
    (the augmentation is replayed with the same generator state), so four inputs, and

        L = L_con(v1, v2) + L_con(m1, m2) + a * MSE(decoder(encoder(canonical(x_1))), x).

    **Deviation from the papers**: they reconstruct the (masked patches of the) *augmented*
    image; here the decoder reconstructs the complete native 32 x 64 field from the masked
    *canonical* view (the inference view of ``x_1``, a fifth input of the same encoder pass).
    Every scheme then decodes to the same grid and is comparable, and the decoder learns the
    project's sparse-reconstruction task: ``forward(fields, observed)`` at inference is exactly
    what it was trained on.

    Args:
        method, decoder, latitude_weights: see :class:`JointContrastiveDecoder`.
        mask_ratio: missing fraction of each masked input, in [0, 1).
        decoder_weight: ``a >= 0``.
        mask_kind: ``"pixel"``, ``"patch"`` or ``"swath"``
        (:data:`geofusion.data.observations.MASK_KINDS`).
    """

    def __init__(self, method: nn.Module, decoder: nn.Module, mask_ratio: float = 0.5,
                 decoder_weight: float = 1.0, mask_kind: str = "pixel",
                 latitude_weights: Any = None) -> None:
        super().__init__(method, decoder, latitude_weights)
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio (missing fraction) must be in [0, 1), got {mask_ratio}")
        if not decoder_weight >= 0:
            raise ValueError(f"decoder_weight must be >= 0, got {decoder_weight}")
        if mask_kind not in MASK_KINDS:
            raise ValueError(f"unknown mask_kind {mask_kind!r}; choose one of {MASK_KINDS}")
        self.mask_ratio = float(mask_ratio)
        self.decoder_weight = float(decoder_weight)
        self.mask_kind = mask_kind

    def _paired_view(self, full: Tensor, masked: Tensor, generator: torch.Generator
                     ) -> tuple[Tensor, Tensor]:
        """One augmentation applied to both ``full`` and ``masked`` (same random draws)."""
        if not isinstance(generator, torch.Generator):
            raise ValueError("the yao_dippel scheme needs an explicit torch.Generator for its "
                             "views and masks")
        state = generator.get_state()
        view = self.method.augmentation(full, generator)
        replay = torch.Generator(device=generator.device)
        replay.set_state(state)
        return view, self.method.augmentation(masked, replay)

    def loss(self, batch: tuple[Tensor, ...], generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        fields = batch[0]
        b, _, h, w = fields.shape
        masks = make_mask((2, b, h, w), self.mask_ratio, self.mask_kind, generator)
        full = observe(self.method, fields)
        masked = [observe(self.method, fields, masks[k]) for k in range(2)]
        view1, masked1 = self._paired_view(full, masked[0], generator)
        view2, masked2 = self._paired_view(full, masked[1], generator)
        h1, h2, hm1, hm2, h_sparse = self._encode(
            view1, view2, masked1, masked2, self.method.inference_view(masked[0]))
        labels = _batch_labels(batch)
        contrastive = self._contrastive(h1, h2, labels)
        masked_contrastive = self._contrastive(hm1, hm2, labels)
        reconstruction = self.reconstruction_term(self.decoder(h_sparse), fields)
        loss = contrastive + masked_contrastive + self.decoder_weight * reconstruction
        return loss, {"contrastive": contrastive.item(),
                      "masked_contrastive": masked_contrastive.item(),
                      "reconstruction": reconstruction.item(),
                      "decoder_weight": self.decoder_weight}


_JOINT_CLASSES: dict[str, type[JointContrastiveDecoder]] = {
    "kadeethum": KadeethumJointDecoder,
    "quetin": QuetinJointDecoder,
    "yao_dippel": YaoDippelJointDecoder,
}


def build_joint(
    scheme: str,
    in_channels: int = 5,
    grid: tuple[int, int] = (32, 64),
    latent_dim: int = 1000,
    width: int = 64,
    proj_dim: int = 128,
    proj_hidden_dim: int = 1024,
    lambd: float = 0.01,
    decoder_width: int | None = None,
    augmentation: str = "report",
    encoder: str = "resnet",
    eof_basis: dict[str, Any] | None = None,
    reconstruction_loss: str = "mse",
    latitudes: Any = None,
    **scheme_params: Any,
) -> JointContrastiveDecoder:
    """A joint scheme around Barlow Twins, untrained, from JSON-friendly parameters.

    The contrastive part is ``build_method("barlow_twins", ...)`` (the report's architecture:
    ResNet encoder, three-layer projector ending in batch norm, ``lambd``); the decoder is a
    :class:`geofusion.models.resnet.FieldDecoder` on ``grid``. Pass the same numbers to
    :func:`geofusion.learning.model_cache.cached_fit`'s description to share the trained model.

    Args:
        scheme: one of :data:`JOINT_SCHEMES`: ``"kadeethum"``
            (:class:`KadeethumJointDecoder`: ``inner_batch``, ``decoder_weight``),
            ``"quetin"`` (:class:`QuetinJointDecoder`: ``alpha_start``, ``alpha_end``,
            ``schedule``) or ``"yao_dippel"`` (:class:`YaoDippelJointDecoder`: ``mask_ratio``,
            ``decoder_weight``, ``mask_kind``).
        in_channels, grid, latent_dim, width, proj_dim, proj_hidden_dim, lambd: as for
            :func:`geofusion.learning.methods.build_method`.
        decoder_width: base width of the decoder (default: ``width``).
        augmentation: preset of the contrastive views and the canonical view, as for
            :func:`geofusion.learning.methods.build_method` ("report" or "native").
        encoder, eof_basis: the encoder kind and its EOF basis, as for
            :func:`geofusion.learning.methods.build_method` (``"eof_residual"``: the EOF code
            of the training days plus a zero-initialised ResNet residual, issue 23).
        reconstruction_loss: ``"mse"`` (the report's) or ``"lat_weighted"``: the
            reconstruction term weighted by the cell areas of ``latitudes`` (degrees),
            :func:`reconstruction_error`.
        **scheme_params: the scheme's own parameters (above).

    Example:
        >>> import numpy as np
        >>> model = build_joint("quetin", latent_dim=8, width=2, proj_dim=4, proj_hidden_dim=8,
        ...                     reconstruction_loss="lat_weighted",
        ...                     latitudes=np.linspace(-87.2, 87.2, 32))
        >>> round(float(model.latitude_weights.mean()), 6)
        1.0
    """
    if scheme not in _JOINT_CLASSES:
        raise ValueError(f"unknown joint scheme {scheme!r}; choose one of {JOINT_SCHEMES}")
    cls = _JOINT_CLASSES[scheme]
    allowed = [p for p in inspect.signature(cls.__init__).parameters
               if p not in ("self", "method", "decoder", "latitude_weights")]
    unknown = sorted(set(scheme_params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameters {unknown} for the {scheme!r} scheme; it takes "
                         f"{allowed}")
    weights = reconstruction_latitude_weights(reconstruction_loss, latitudes, grid[0])
    grid = (int(grid[0]), int(grid[1]))
    method = build_method("barlow_twins", in_channels=in_channels, grid=grid,
                          latent_dim=latent_dim, width=width, proj_dim=proj_dim,
                          proj_hidden_dim=proj_hidden_dim, lambd=lambd, augmentation=augmentation,
                          encoder=encoder, eof_basis=eof_basis)
    decoder = FieldDecoder(latent_dim=latent_dim, out_channels=in_channels, grid=grid,
                           width=width if decoder_width is None else decoder_width)
    return cls(method, decoder, latitude_weights=weights, **scheme_params)

"""Which days meet in a contrastive batch: temporal positives and time-aware batches.

Two ideas of SPARTA (arXiv 2603.24744) on top of the report's day-wise pairs:

- **Temporal positives** (:class:`TemporalPairDataset`): a day ``t`` is paired not only with
  an augmentation of itself but with (an observation of) a nearby day ``t + s delta``,
  ``s = +-1`` with equal probability and ``delta in {1, ..., max_shift}`` with
  ``p(delta) ∝ exp(-delta / scale)``, so the representation is asked to be smooth in time.
  Near the ends of the series the sign that stays inside is taken.
- **Time-aware batches** (:class:`TimeAwareBatchSampler`): each batch is built around
  anchors, with *hard* negatives from nearby weeks (``hard_range`` days away, by default
  10-40: similar large-scale state, different weather) and *easy* negatives far away
  (at least ``easy_min`` days, by default 1000: another year and season), instead of a
  uniform shuffle whose negatives are almost all easy.

Both are deterministic functions of ``(seed, epoch)`` (call ``set_epoch`` each epoch, as with
:class:`torch.utils.data.distributed.DistributedSampler`), so a resumed run draws what an
uninterrupted one would; the batch sampler splits every batch across DDP ranks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["shift_probabilities", "draw_shifts", "TemporalPairDataset", "TimeAwareBatchSampler"]


def shift_probabilities(max_shift: int = 5, scale: float = 10.0) -> np.ndarray:
    """``p(delta)`` for ``delta = 1 .. max_shift``, proportional to ``exp(-delta / scale)``.

    Example::

        >>> np.round(shift_probabilities(3, 1.0), 3).tolist()
        [0.665, 0.245, 0.09]
    """
    if int(max_shift) != max_shift or max_shift < 1:
        raise ValueError(f"max_shift must be an integer >= 1 day, got {max_shift}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0 days, got {scale}")
    weights = np.exp(-np.arange(1, int(max_shift) + 1) / float(scale))
    return weights / weights.sum()


def draw_shifts(days: Sequence[int] | np.ndarray, n_days: int, generator: np.random.Generator,
                max_shift: int = 5, scale: float = 10.0) -> np.ndarray:
    """Partner day of each of ``days`` in a series of ``n_days``: ``t + s delta`` (module doc).

    Returns int64 ``(len(days),)``, every partner in ``[0, n_days)`` and ``1 <= |partner - t|
    <= max_shift``.
    """
    days = np.asarray(days, dtype=np.int64)
    if n_days <= max_shift:
        raise ValueError(f"a series of {n_days} days is too short for shifts up to "
                         f"{max_shift} days; lower max_shift")
    if days.size and (days.min() < 0 or days.max() >= n_days):
        raise ValueError(f"days must lie in [0, {n_days}), got [{days.min()}, {days.max()}]")
    delta = generator.choice(np.arange(1, max_shift + 1), size=days.shape,
                             p=shift_probabilities(max_shift, scale))
    sign = np.where(generator.random(days.shape) < 0.5, -1, 1)
    partner = days + sign * delta
    outside = (partner < 0) | (partner >= n_days)
    return np.where(outside, days - sign * delta, partner)


class TemporalPairDataset(torch.utils.data.Dataset):
    """Items ``(fields[t], fields[partner(t)], label[t])`` with temporal partners (module doc).

    The partner of day ``t`` in epoch ``e`` depends only on ``(seed, e, t)``, so any loader
    order, worker count or resumption gives the same pairs. A contrastive method of
    :mod:`geofusion.learning.methods` given such a batch makes its second view from the partner
    (temporal positives) instead of from the same day.

    With ``with_mirror`` the items are ``(fields[t], fields[t + s delta], fields[t - s delta],
    label[t])``: the partner and its mirror image about ``t``, the three equally spaced days
    the latent smoothness term needs (:func:`geofusion.learning.smoothness.latent_smoothness_loss`).
    Both must lie inside the series, so the anchors are then only the days
    ``max_shift .. T - 1 - max_shift`` (``len = T - 2 max_shift``) and the sign ``s`` is a
    fair coin.

    Args:
        fields: ``(T, C, H, W)`` standardised, consecutive days of ONE split (partners never
            cross into another split).
        labels: ``(T,)`` integer labels (e.g. seasons) or None.
        max_shift, scale: the shift distribution (:func:`shift_probabilities`).
        seed: base seed.
        with_mirror: also return day ``t - s delta`` (see above).

    Example::

        >>> ds = TemporalPairDataset(np.zeros((20, 5, 4, 8), np.float32), seed=0)
        >>> x, partner, label = ds[3]
        >>> tuple(x.shape), tuple(partner.shape), int(label)
        ((5, 4, 8), (5, 4, 8), 0)
        >>> len(TemporalPairDataset(np.zeros((20, 5, 4, 8), np.float32), with_mirror=True))
        10
    """

    def __init__(self, fields: np.ndarray | Tensor, labels: Sequence[int] | None = None,
                 max_shift: int = 5, scale: float = 10.0, seed: int = 0,
                 with_mirror: bool = False) -> None:
        self.fields = torch.as_tensor(np.asarray(fields), dtype=torch.float32)
        if self.fields.ndim != 4:
            raise ValueError(f"fields must be (T, C, H, W), got {tuple(self.fields.shape)}")
        n = len(self.fields)
        self.labels = torch.zeros(n, dtype=torch.long) if labels is None \
            else torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if len(self.labels) != n:
            raise ValueError(f"{len(self.labels)} labels for {n} days")
        shift_probabilities(max_shift, scale)  # validates
        if n <= max_shift:
            raise ValueError(f"{n} days are too few for shifts up to {max_shift} days")
        if with_mirror and n < 2 * max_shift + 2:
            raise ValueError(f"{n} days are too few for mirrored shifts up to {max_shift} days "
                             f"(need at least {2 * max_shift + 2}); lower max_shift")
        self.max_shift, self.scale, self.seed, self.epoch = int(max_shift), float(scale), seed, 0
        self.with_mirror = bool(with_mirror)

    def set_epoch(self, epoch: int) -> None:
        """Draw the partners of ``epoch`` (call before each epoch;
        :func:`geofusion.learning.training.fit` does)."""
        self.epoch = int(epoch)

    def day(self, index: int) -> int:
        """The anchor day ``t`` of item ``index`` (shifted by ``max_shift`` with the mirror)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside [0, {len(self)})")
        return int(index) + (self.max_shift if self.with_mirror else 0)

    def partner(self, day: int) -> int:
        """The partner index of ``day`` in the current epoch."""
        generator = np.random.default_rng([self.seed, self.epoch, int(day)])
        if self.with_mirror:
            # Both t + s delta and t - s delta are inside for anchors away from the ends.
            delta = generator.choice(np.arange(1, self.max_shift + 1),
                                     p=shift_probabilities(self.max_shift, self.scale))
            sign = -1 if generator.random() < 0.5 else 1
            return int(day + sign * delta)
        return int(draw_shifts([day], len(self.fields), generator, self.max_shift,
                               self.scale)[0])

    def __len__(self) -> int:
        return len(self.fields) - (2 * self.max_shift if self.with_mirror else 0)

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        day = self.day(index)
        partner = self.partner(day)
        if self.with_mirror:
            return (self.fields[day], self.fields[partner], self.fields[2 * day - partner],
                    self.labels[day])
        return self.fields[day], self.fields[partner], self.labels[day]

    def describe(self) -> dict[str, Any]:
        """Settings as a JSON-friendly dict (for run descriptions)."""
        return {"max_shift": self.max_shift, "scale": self.scale,
                "with_mirror": self.with_mirror}


class TimeAwareBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of day indices: anchors + hard negatives nearby + easy negatives far away.

    Each batch holds ``anchors`` random anchor days, and for each anchor ``hard`` days at a
    distance in ``hard_range`` (inclusive, either direction) and ``easy`` days at least
    ``easy_min`` days away: ``batch_size = anchors * (1 + hard + easy)`` days, all distinct.
    An epoch has ``len(self)`` batches (about one pass over the days as anchors). With
    ``world_size > 1`` each rank receives its contiguous share of every batch, so the global
    batch (gathered by :mod:`geofusion.learning.distributed`) is the designed one.

    Use as ``DataLoader(dataset, batch_sampler=TimeAwareBatchSampler(len(dataset), ...))``.

    Example::

        >>> sampler = TimeAwareBatchSampler(3000, anchors=2, hard=1, easy=1, seed=0)
        >>> batch = next(iter(sampler))
        >>> len(batch), abs(batch[1] - batch[0]) in range(10, 41)
        (6, True)
    """

    def __init__(self, n_days: int, anchors: int = 16, hard: int = 2, easy: int = 1,
                 hard_range: tuple[int, int] = (10, 40), easy_min: int = 1000, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        lo, hi = hard_range
        if anchors < 1 or hard < 0 or easy < 0:
            raise ValueError(f"need anchors >= 1, hard >= 0, easy >= 0; got {anchors}, "
                             f"{hard}, {easy}")
        if not 1 <= lo <= hi:
            raise ValueError(f"hard_range must be (lo, hi) days with 1 <= lo <= hi, got "
                             f"{hard_range}")
        if easy and n_days <= easy_min:
            raise ValueError(f"easy negatives need days at least {easy_min} apart but the "
                             f"series has {n_days} days; lower easy_min or set easy=0")
        if n_days <= hi:
            raise ValueError(f"{n_days} days are too few for hard negatives up to {hi} days "
                             "away")
        self.batch_size = anchors * (1 + hard + easy)
        if self.batch_size % world_size:
            raise ValueError(f"batch of {self.batch_size} days does not split over "
                             f"{world_size} ranks; change anchors/hard/easy")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.n_days, self.anchors, self.hard, self.easy = n_days, anchors, hard, easy
        self.hard_range, self.easy_min, self.seed = (lo, hi), easy_min, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return max(1, self.n_days // self.batch_size)

    def _batch(self, rng: np.random.Generator) -> list[int]:
        lo, hi = self.hard_range
        chosen: list[int] = []

        def add(candidates: np.ndarray, count: int) -> None:
            candidates = candidates[~np.isin(candidates, chosen)]
            if len(candidates) < count:
                raise RuntimeError("not enough distinct days for this batch; use fewer "
                                   "anchors or negatives")
            chosen.extend(int(c) for c in rng.choice(candidates, size=count, replace=False))

        all_days = np.arange(self.n_days)
        anchors = all_days
        if self.easy:
            # In a series shorter than twice easy_min the middle days have no day easy_min
            # away; they cannot anchor (in longer series every day can, and nothing changes).
            anchors = all_days[(all_days >= self.easy_min)
                               | (all_days <= self.n_days - 1 - self.easy_min)]
        for _ in range(self.anchors):
            add(anchors, 1)
            anchor = chosen[-1]
            distance = np.abs(all_days - anchor)
            if self.hard:
                add(all_days[(distance >= lo) & (distance <= hi)], self.hard)
            if self.easy:
                add(all_days[distance >= self.easy_min], self.easy)
        return chosen

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        share = self.batch_size // self.world_size
        for _ in range(len(self)):
            batch = self._batch(rng)
            yield batch[self.rank * share:(self.rank + 1) * share]

    def describe(self) -> dict[str, Any]:
        """Settings as a JSON-friendly dict (for run descriptions)."""
        return {"anchors": self.anchors, "hard": self.hard, "easy": self.easy,
                "hard_range": list(self.hard_range), "easy_min": self.easy_min}

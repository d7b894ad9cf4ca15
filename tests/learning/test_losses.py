"""Each loss against its paper's formula: hand-worked cases and per-anchor loop references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geofusion.learning.losses import (
    BarlowTwinsLoss,
    NTXentLoss,
    SupConLoss,
    barlow_twins_loss,
    nt_xent_loss,
    supcon_loss,
)

EPS = 1e-5  # BatchNorm1d's eps, as in the official Barlow Twins code


# ---------------------------------------------------------------- references (loops, numpy)

def barlow_reference(z1: np.ndarray, z2: np.ndarray, lambd: float) -> float:
    n, d = z1.shape
    a = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + EPS)  # numpy var is the biased one
    b = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + EPS)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lambd * c**2
    return loss


def contrastive_reference(views: list[np.ndarray], labels: list[int], tau: float) -> float:
    """Khosla et al. eq. 2 (L_out), averaged over anchors, by explicit loops."""
    z = [v / np.linalg.norm(v) for v in views]
    total = 0.0
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in others)
        positives = [p for p in others if labels[p] == labels[i]]
        total += -sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / denom)
                      for p in positives) / len(positives)
    return total / len(z)


# ---------------------------------------------------------------- Barlow Twins

def test_barlow_twins_hand_worked() -> None:
    # Standardised columns: z1 -> a * [[-1, 1], [1, -1]], z2 -> [[-a, -b], [a, b]] with
    # a = 1 / sqrt(1 + eps) (variance 1) and b = 2 / sqrt(4 + eps) (variance 4), so
    # C = [[a^2, a b], [-a^2, -a b]].
    z1 = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
    z2 = torch.tensor([[0.0, 0.0], [2.0, 4.0]], dtype=torch.float64)
    a, b = 1 / math.sqrt(1 + EPS), 2 / math.sqrt(4 + EPS)
    lambd = 0.3
    expected = (1 - a * a) ** 2 + (1 + a * b) ** 2 + lambd * ((a * b) ** 2 + a**4)
    assert barlow_twins_loss(z1, z2, lambd=lambd).item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(4 + 2 * lambd, rel=1e-4)


def test_barlow_twins_matches_loop_reference() -> None:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(5, 4, generator=g, dtype=torch.float64)
    z2 = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3 + 1
    expected = barlow_reference(z1.numpy(), z2.numpy(), lambd=0.05)
    assert barlow_twins_loss(z1, z2, lambd=0.05).item() == pytest.approx(expected, rel=1e-10)
    assert BarlowTwinsLoss(lambd=0.05)(z1, z2).item() == pytest.approx(expected, rel=1e-10)


def test_barlow_twins_identical_views_have_zero_invariance_term() -> None:
    z = torch.randn(64, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert barlow_twins_loss(z, z, lambd=0.0).item() < 1e-8
    # The redundancy term remains: random columns are not exactly uncorrelated.
    assert barlow_twins_loss(z, z, lambd=1.0).item() > 1e-3


def test_barlow_twins_standardises_scale_and_shift() -> None:
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    base = barlow_twins_loss(z1, z2)
    torch.testing.assert_close(barlow_twins_loss(5 * z1 - 2, z2 + 7), base, rtol=1e-4, atol=1e-5)


def test_barlow_twins_constant_features_are_finite() -> None:
    z = torch.ones(4, 3)
    loss = barlow_twins_loss(z, z, lambd=0.01)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(3.0)  # C = 0: sum (1 - 0)^2


@pytest.mark.parametrize("z1, z2", [
    (torch.randn(1, 3), torch.randn(1, 3)),        # batch of one
    (torch.randn(4, 3), torch.randn(4, 2)),        # mismatched
    (torch.randn(4, 3, 1), torch.randn(4, 3, 1)),  # not 2-D
])
def test_barlow_twins_rejects_bad_input(z1: torch.Tensor, z2: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        barlow_twins_loss(z1, z2)


def test_barlow_twins_gradients_and_half_precision() -> None:
    z1 = torch.randn(6, 4, requires_grad=True)
    z2 = torch.randn(6, 4)
    barlow_twins_loss(z1, z2).backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all()
    half = barlow_twins_loss(z1.detach().bfloat16(), z2.bfloat16())
    assert half.dtype == torch.float32 and torch.isfinite(half)


# ---------------------------------------------------------------- NT-Xent

def test_nt_xent_hand_worked() -> None:
    tau = 0.5
    e = torch.eye(2)
    # Views e1, e2 | e1, e2: each anchor's positive has logit 1/tau, its two negatives 0.
    assert nt_xent_loss(e, e, tau).item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / tau)))
    # Views e1, e2 | e2, e1: the positive is orthogonal (logit 0), one negative is identical.
    swapped = e.flip(0)
    assert nt_xent_loss(e, swapped, tau).item() == pytest.approx(math.log(2 + math.exp(1 / tau)))
    # Not normalised on input: scaling an embedding changes nothing.
    assert nt_xent_loss(3 * e, swapped * 0.1, tau).item() == pytest.approx(
        math.log(2 + math.exp(1 / tau)), rel=1e-6)


def test_nt_xent_matches_loop_reference() -> None:
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(4, 5, generator=g, dtype=torch.float64)
    z2 = torch.randn(4, 5, generator=g, dtype=torch.float64)
    views = list(z1.numpy()) + list(z2.numpy())
    labels = list(range(4)) * 2  # the positive of each view is the other view of its sample
    expected = contrastive_reference(views, labels, tau=0.3)
    assert nt_xent_loss(z1, z2, 0.3).item() == pytest.approx(expected, rel=1e-10)
    assert NTXentLoss(0.3)(z1, z2).item() == pytest.approx(expected, rel=1e-10)


def test_nt_xent_is_symmetric_in_the_views() -> None:
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    torch.testing.assert_close(nt_xent_loss(z1, z2), nt_xent_loss(z2, z1))


def test_nt_xent_decreases_as_positives_align() -> None:
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    losses = [nt_xent_loss(z1, (1 - t) * z2 + t * z1, 0.5).item() for t in np.linspace(0, 1, 6)]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))


@pytest.mark.parametrize("kwargs", [
    {"z1": torch.randn(4, 3), "z2": torch.randn(4, 3), "temperature": 0.0},
    {"z1": torch.randn(4, 3), "z2": torch.randn(4, 3), "temperature": -1.0},
    {"z1": torch.randn(4, 3), "z2": torch.randn(3, 3)},
    {"z1": torch.randn(1, 3), "z2": torch.randn(1, 3)},  # no negatives
    {"z1": torch.randn(4), "z2": torch.randn(4)},
])
def test_nt_xent_rejects_bad_input(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        nt_xent_loss(**kwargs)


def test_nt_xent_degenerate_inputs_are_finite() -> None:
    # Zero vectors normalise to 0 (F.normalize's eps), identical vectors give equal logits.
    assert torch.isfinite(nt_xent_loss(torch.zeros(3, 4), torch.zeros(3, 4)))
    z = torch.ones(3, 4, requires_grad=True)
    loss = nt_xent_loss(z, torch.ones(3, 4), temperature=0.01)
    assert loss.item() == pytest.approx(math.log(5))  # 2N - 1 = 5 equal logits
    loss.backward()
    assert torch.isfinite(z.grad).all()


# ---------------------------------------------------------------- SupCon

def test_supcon_hand_worked() -> None:
    # Two samples with the same label, two identical views each: e1, e1 and e2, e2. Anchor e1
    # has logits 1/tau (its twin), 0, 0 and all three others are positives:
    # l = -(1/3) [(1/tau - log D) + 2 (0 - log D)] = log D - 1/(3 tau), D = e^{1/tau} + 2.
    tau = 0.2
    features = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]],
                            dtype=torch.float64)
    expected = math.log(math.exp(1 / tau) + 2) - 1 / (3 * tau)
    assert supcon_loss(features, torch.tensor([7, 7]), tau).item() == pytest.approx(expected)
    # Different labels: only the twin is positive, as in NT-Xent.
    expected_simclr = math.log(1 + 2 * math.exp(-1 / tau))
    assert supcon_loss(features, torch.tensor([0, 1]), tau).item() == pytest.approx(
        expected_simclr)


def test_supcon_matches_loop_reference() -> None:
    g = torch.Generator().manual_seed(6)
    b, v, d = 5, 3, 4
    features = torch.randn(b, v, d, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1])
    views = [features[i, j].numpy() for i in range(b) for j in range(v)]
    view_labels = [int(labels[i]) for i in range(b) for _ in range(v)]
    expected = contrastive_reference(views, view_labels, tau=0.1)
    assert supcon_loss(features, labels, 0.1).item() == pytest.approx(expected, rel=1e-10)
    assert SupConLoss(0.1)(features, labels).item() == pytest.approx(expected, rel=1e-10)
    # The official code's scaling by tau / base_tau.
    scaled = supcon_loss(features, labels, 0.1, base_temperature=0.07).item()
    assert scaled == pytest.approx(expected * 0.1 / 0.07, rel=1e-10)


def test_supcon_without_labels_equals_nt_xent() -> None:
    g = torch.Generator().manual_seed(7)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    for tau in (0.1, 0.5):
        torch.testing.assert_close(supcon_loss(torch.stack([z1, z2], 1), None, tau),
                                   nt_xent_loss(z1, z2, tau))
    # Distinct labels are the same as no labels.
    torch.testing.assert_close(supcon_loss(torch.stack([z1, z2], 1), torch.arange(6), 0.2),
                               nt_xent_loss(z1, z2, 0.2))


def test_supcon_single_view_with_repeated_labels() -> None:
    g = torch.Generator().manual_seed(8)
    features = torch.randn(4, 1, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([1, 1, 2, 2])
    expected = contrastive_reference(list(features[:, 0].numpy()), labels.tolist(), tau=0.5)
    assert supcon_loss(features, labels, 0.5).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("features, labels, kwargs, match", [
    (torch.randn(4, 1, 3), None, {}, "no positive"),
    (torch.randn(3, 1, 3), torch.tensor([0, 0, 1]), {}, "no positive"),
    (torch.randn(4, 3), None, {}, r"\(B, V, D\)"),
    (torch.randn(4, 2, 3), torch.tensor([0, 1, 2]), {}, "labels"),
    (torch.randn(4, 2, 3), torch.rand(4), {}, "integers"),
    (torch.randn(4, 2, 3), None, {"temperature": 0.0}, "temperature"),
    (torch.randn(4, 2, 3), None, {"base_temperature": -1.0}, "base_temperature"),
])
def test_supcon_rejects_bad_input(features, labels, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        supcon_loss(features, labels, **kwargs)


def test_supcon_degenerate_inputs_are_finite() -> None:
    features = torch.ones(3, 2, 4, requires_grad=True)
    loss = supcon_loss(features, torch.tensor([0, 0, 1]), temperature=0.05)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(features.grad).all()
    assert torch.isfinite(supcon_loss(torch.zeros(3, 2, 4)))

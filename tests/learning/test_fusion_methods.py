"""Fusion encoders, operators and methods: interface, missing modes, costs, mode dropout, the
mode-group method (geofusion.models.fusion_encoders, fusion_operators, fusion_methods)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from geofusion.learning.augment import ReportAugmentation
from geofusion.learning.fusion_methods import (
    MODE_GROUPS,
    ModeDropoutMethod,
    ModeGroupContrastiveMethod,
    build_fusion_method,
    missing_mode_robustness,
)
from geofusion.models.fusion_encoders import (
    FUSIONS,
    EarlyFusionEncoder,
    FusionEncoder,
    TokenFusionEncoder,
    build_encoder,
    fusion_cost,
    mode_dropout,
    parse_scheme,
    random_mode_split,
)
from geofusion.models.fusion_operators import CrossAttentionFusion
from geofusion.models.resnet import ProjectionHead, ResNetEncoder

SMALL = {"latent_dim": 12, "width": 4, "token_dim": 8, "heads": 2}
TINY_METHOD = {**SMALL, "proj_dim": 8, "proj_hidden_dim": 16}
GRID = (16, 32)
SCHEMES = [("early", "concat")] + [(kind, op) for kind in ("late", "hybrid")
                                   for op in FUSIONS]


def fields(batch: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 5, *GRID, generator=torch.Generator().manual_seed(seed))


def encoder(kind: str, op: str, seed: int = 0) -> FusionEncoder:
    torch.manual_seed(seed)
    return build_encoder(kind, op, **SMALL)


@pytest.mark.parametrize(("kind", "op"), SCHEMES)
def test_every_scheme_maps_fields_to_latents_with_and_without_modes(kind, op):
    enc = encoder(kind, op)
    x = fields()
    present = mode_dropout(len(x), 5, 0.5, torch.Generator().manual_seed(1))
    assert not present.all()
    full, partial = enc(x), enc(x, present)
    assert full.shape == partial.shape == (6, SMALL["latent_dim"])
    assert torch.isfinite(full).all() and torch.isfinite(partial).all()
    assert (enc.kind, enc.fusion) == (kind, op)
    partial.square().mean().backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)


@pytest.mark.parametrize(("kind", "op"), [s for s in SCHEMES if s[0] != "early"])
def test_absent_modes_have_no_influence_in_late_and_hybrid_fusion(kind, op):
    enc = encoder(kind, op).eval()
    x = fields()
    present = torch.ones(6, 5, dtype=torch.bool)
    present[:3, 1] = False
    present[2:5, 4] = False
    garbage = x.clone()
    garbage[~present] = 1e3 * torch.randn_like(garbage[~present])
    with torch.no_grad():
        torch.testing.assert_close(enc(x, present), enc(garbage, present))
        # ...while the same data as *present* modes does change the embedding.
        assert not torch.allclose(enc(x), enc(x, present))


@pytest.mark.parametrize(("kind", "op"), SCHEMES)
def test_a_sample_embedding_does_not_depend_on_the_rest_of_the_batch(kind, op):
    # Per-mode encoders run on the subset of samples that have the mode: the scatter back
    # into the token tensor must put each token at its own sample.
    enc = encoder(kind, op).eval()
    x = fields()
    present = mode_dropout(6, 5, 0.4, torch.Generator().manual_seed(3))
    with torch.no_grad():
        batched = enc(x, present)
        single = torch.cat([enc(x[i:i + 1], present[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_early_fusion_is_the_resnet_encoder_and_zero_fills_absent_modes():
    torch.manual_seed(0)
    early = EarlyFusionEncoder(5, 12, 4).eval()
    resnet = ResNetEncoder(5, 12, 4).eval()
    resnet.load_state_dict(early.backbone.state_dict())
    x = fields()
    present = torch.ones(6, 5, dtype=torch.bool)
    present[:, 2] = False
    zeroed = x.clone()
    zeroed[:, 2] = 0
    with torch.no_grad():
        torch.testing.assert_close(early(x), resnet(x))
        torch.testing.assert_close(early(x, present), resnet(zeroed))


def test_cross_attention_mask_excludes_self_and_absent_modes():
    op = CrossAttentionFusion(n_tokens=4, token_dim=8, out_dim=3, heads=2)
    present = torch.tensor([[True, True, False, True], [False, False, True, False]])
    blocked = op.attention_mask(present)
    assert blocked.shape == (2 * 2, 4, 4)
    sample0 = blocked[0]
    assert sample0.diagonal().all()            # never itself when others are there
    assert sample0[:, 2].all()                 # never the absent mode
    assert not sample0[0, 1] and not sample0[0, 3]
    # A sample with a single mode has nothing else to attend to: it attends to itself.
    sample1 = blocked[2]
    assert not sample1[2, 2] and sample1[2, [0, 1, 3]].all()
    torch.testing.assert_close(blocked[0], blocked[1])  # same mask for every head


def test_cross_attention_reads_only_other_modes():
    # Two present modes of three: each token's only key is the other token, so (before the
    # residual) token 0's attention output is token 1's value whatever token 0 holds.
    torch.manual_seed(0)
    op = CrossAttentionFusion(n_tokens=3, token_dim=8, out_dim=3, heads=2).eval()
    tokens = torch.randn(1, 3, 8)
    present = torch.tensor([[True, True, False]])

    def attended(t):
        q = op.norm1(t + op.mode_embedding)
        return op.attention(q, q, q, attn_mask=op.attention_mask(present),
                            need_weights=False)[0]

    changed = tokens.clone()
    changed[0, 0] = torch.randn(8)
    with torch.no_grad():
        a, b = attended(tokens), attended(changed)
        torch.testing.assert_close(a[0, 0], b[0, 0])
        assert not torch.allclose(a[0, 1], b[0, 1])  # token 1 reads token 0
        changed_absent = tokens.clone()
        changed_absent[0, 2] = torch.randn(8)
        torch.testing.assert_close(op(tokens, present), op(changed_absent, present))


def test_present_mask_is_validated():
    enc = encoder("late", "concat")
    x = fields(2)
    with pytest.raises(ValueError, match="torch.bool"):
        enc(x, torch.ones(2, 5))
    with pytest.raises(ValueError, match="shape"):
        enc(x, torch.ones(2, 4, dtype=torch.bool))
    empty = torch.ones(2, 5, dtype=torch.bool)
    empty[1] = False
    with pytest.raises(ValueError, match="no mode"):
        enc(x, empty)
    with pytest.raises(ValueError, match="early fusion"):
        build_encoder("early", "self_attention")
    with pytest.raises(ValueError, match="unknown fusion kind"):
        build_encoder("middle")
    with pytest.raises(ValueError, match="divisible"):
        build_encoder("late", "cross_attention", token_dim=6, heads=4)


def test_fusion_cost_counts_parameters_and_the_fusion_layer_flops():
    enc = encoder("late", "concat")
    cost = fusion_cost(enc, (1, 5, *GRID))
    assert cost["parameters"] == sum(p.numel() for p in enc.parameters())
    per_mode = sum(fusion_cost(m, (1, 1, *GRID))["flops"] for m in enc.mode_encoders)
    tokens, d, out = 5, SMALL["token_dim"], SMALL["latent_dim"]
    assert cost["flops"] == per_mode + 2 * tokens * d * out  # the concat projection
    assert fusion_cost(enc, (3, 5, *GRID))["flops"] == 3 * cost["flops"]
    # Attention operators cost more than concatenation (scores counted analytically on CPU).
    attention = fusion_cost(encoder("late", "self_attention"), (1, 5, *GRID))
    assert attention["flops"] > cost["flops"]


def test_mode_dropout_keeps_a_mode_and_drops_at_the_requested_rate():
    present = mode_dropout(4000, 5, 0.3, torch.Generator().manual_seed(0))
    assert present.dtype == torch.bool and present.shape == (4000, 5)
    assert present.any(dim=1).all()
    assert 0.66 < present.float().mean() < 0.74
    again = mode_dropout(4000, 5, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(present, again)
    assert mode_dropout(10, 5, 0.0).all()
    # At p close to 1 almost every sample keeps exactly the one rescued mode.
    assert (mode_dropout(500, 5, 0.99, torch.Generator().manual_seed(1)).sum(1) >= 1).all()
    with pytest.raises(ValueError):
        mode_dropout(2, 5, 1.0)


def test_random_mode_split_gives_two_non_empty_groups():
    group_a = random_mode_split(1000, 5, torch.Generator().manual_seed(0))
    sizes = group_a.sum(1)
    assert (sizes >= 1).all() and (sizes <= 4).all()
    assert len({tuple(row.tolist()) for row in group_a}) == 30  # all proper subsets occur


def test_mode_dropout_method_drops_modes_reproducibly():
    torch.manual_seed(0)
    method = build_fusion_method("barlow_twins", kind="late", fusion="self_attention",
                                 p_mode_dropout=0.5, proj_dim=8, proj_hidden_dim=16, **SMALL)
    assert isinstance(method, ModeDropoutMethod)
    assert method.encoder is method.method.encoder
    assert method.augmentation is method.method.augmentation
    seen = []
    method.encoder.fuse.register_forward_hook(lambda m, args, out: seen.append(args[1].clone()))
    batch = (fields(8), torch.zeros(8, dtype=torch.long))
    method.train()
    loss1, _ = method.loss(batch, torch.Generator().manual_seed(5))
    mask1 = seen[-1]
    assert not mask1.all() and mask1.any(dim=1).all()
    method.eval()
    method.encoder(batch[0])
    assert seen[-1].all()  # no dropout outside the loss (evaluation sees all modes)
    method.train()
    loss2, _ = method.loss(batch, torch.Generator().manual_seed(5))
    assert torch.equal(seen[-1], mask1)
    torch.testing.assert_close(loss1, loss2)
    with pytest.raises(ValueError, match="FusionEncoder"):
        ModeDropoutMethod(nn.Module(), 0.3)


@pytest.mark.parametrize("groups", [MODE_GROUPS, "random"])
@pytest.mark.parametrize("objective", ["barlow_twins", "nt_xent"])
def test_mode_group_method_contrasts_the_two_groups(groups, objective):
    torch.manual_seed(0)
    method = build_fusion_method("mode_group", kind="late", fusion="cross_attention",
                                 groups=groups, objective=objective, proj_dim=8,
                                 proj_hidden_dim=16, **SMALL)
    seen = []
    method.encoder.fuse.register_forward_hook(lambda m, args, out: seen.append(args[1].clone()))
    batch = (fields(8), torch.zeros(8, dtype=torch.long))
    loss, _ = method.loss(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    view_a, view_b = seen[-1].chunk(2)
    assert torch.equal(view_a, ~view_b)  # complementary groups
    if groups != "random":
        assert view_a[0].tolist() == [True, False, False, False, True]
    loss.backward()
    for m in method.encoder.mode_encoders:
        assert m.fc.weight.grad is not None and m.fc.weight.grad.abs().sum() > 0


def test_mode_group_method_validates_groups():
    enc = encoder("late", "concat")
    head = ProjectionHead(12, 16, 8, final_batchnorm=True)
    with pytest.raises(ValueError, match="disjoint"):
        ModeGroupContrastiveMethod(enc, head, groups=((0, 1), (1, 2)))
    with pytest.raises(ValueError, match="disjoint"):
        ModeGroupContrastiveMethod(enc, head, groups=((0,), (7,)))
    with pytest.raises(ValueError, match="FusionEncoder"):
        ModeGroupContrastiveMethod(ResNetEncoder(5, 12, 4), head)


@pytest.mark.parametrize("name", ["autoencoder", "barlow_twins", "simclr", "supcon"])
def test_every_method_trains_with_a_fusion_encoder(name):
    torch.manual_seed(0)
    method = build_fusion_method(name, kind="hybrid", fusion="concat", grid=GRID, proj_dim=8,
                                 proj_hidden_dim=16, **SMALL)
    assert isinstance(method.encoder, TokenFusionEncoder)
    batch = (fields(8), torch.tensor([0, 1, 2, 3] * 2))
    loss, _ = method.loss(batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert method.encoder.shared.fc.weight.grad is not None


def test_missing_mode_robustness_table():
    torch.manual_seed(0)
    enc = EarlyFusionEncoder(5, 12, 4)
    with torch.no_grad():
        enc.backbone.conv1.weight[:, 3] = 0  # the encoder ignores mode 3 entirely
    names = ["t2m", "z", "u", "v", "q"]
    table = missing_mode_robustness(enc, fields(10), torch.Generator().manual_seed(0),
                                    mode_names=names, batch_size=4)
    assert list(table.index) == [*names, "(different day)"]
    assert table.loc["v", "cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    assert table.loc["t2m", "cosine_mean"] < 1 - 1e-4
    assert ((table >= -1 - 1e-6) & (table <= 1 + 1e-6)).all().all()
    assert enc.training  # the mode is restored


def test_missing_mode_robustness_of_a_method_goes_through_its_inference_view():
    torch.manual_seed(0)
    method = build_fusion_method("barlow_twins", kind="late", **TINY_METHOD)
    x = fields(4)
    seen = []
    hook = method.encoder.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-2:]))
    table = missing_mode_robustness(method, x, torch.Generator().manual_seed(0), batch_size=4)
    hook.remove()
    assert set(seen) == {(72, 144)}  # the canonical view, never the native grid
    by_hand = missing_mode_robustness(method.encoder, method.inference_view(x),
                                      torch.Generator().manual_seed(0), batch_size=4)
    pd.testing.assert_frame_equal(table, by_hand)


def test_parse_scheme_names():
    assert parse_scheme("early") == ("early", "concat")
    assert parse_scheme("late_self_attention") == ("late", "self_attention")
    assert parse_scheme("hybrid_cross_attention") == ("hybrid", "cross_attention")
    for bad in ("early_self_attention", "late_sum", "middle"):
        with pytest.raises(ValueError, match="unknown fusion scheme"):
            parse_scheme(bad)


def test_fusion_methods_embed_their_own_inference_view():
    x = torch.randn(2, 5, 32, 64, generator=torch.Generator().manual_seed(0))
    dropped = build_fusion_method("barlow_twins", kind="late", p_mode_dropout=0.3,
                                         **TINY_METHOD).eval()
    canonical = ReportAugmentation().canonical(x)
    torch.testing.assert_close(dropped.embed(x), dropped.encoder(canonical))
    present = torch.tensor([[True, False, True, True, True]] * 2)
    torch.testing.assert_close(dropped.embed(x, present), dropped.encoder(canonical, present))
    # The mode-group method trains on the native grid unless it is given an augmentation.
    native = build_fusion_method("mode_group", kind="late", **TINY_METHOD).eval()
    torch.testing.assert_close(native.embed(x), native.encoder(x))
    augmented = build_fusion_method("mode_group", kind="late",
                                           augmentation=ReportAugmentation(),
                                           **TINY_METHOD).eval()
    torch.testing.assert_close(augmented.embed(x), augmented.encoder(canonical))


def test_graph_attention_mixes_only_physical_neighbours_that_are_present():
    from geofusion.models.fusion_operators import VARIABLE_EDGES, GraphAttentionFusion

    torch.manual_seed(0)
    fuse = GraphAttentionFusion(n_tokens=5, token_dim=8, out_dim=4, heads=2)
    tokens = torch.randn(3, 5, 8)
    present = torch.ones(3, 5, dtype=torch.bool)
    changed = tokens.clone()
    changed[:, 4] += 5.0  # humidity: a neighbour of temperature only
    with torch.no_grad():
        before, after = fuse.node_features(tokens, present), fuse.node_features(changed, present)
    moved = (before - after).abs().amax(dim=(0, 2)) > 1e-6
    assert moved.tolist() == [True, False, False, False, True]
    # Geopotential absent: u now reads only itself and v.
    present[:, 1] = False
    changed = tokens.clone()
    changed[:, 1] += 5.0
    with torch.no_grad():
        same = fuse.node_features(tokens, present)[:, [0, 2, 3, 4]]
        torch.testing.assert_close(same, fuse.node_features(changed, present)[:, [0, 2, 3, 4]])
    assert (2, 3) in VARIABLE_EDGES and (0, 4) in VARIABLE_EDGES
    with pytest.raises(ValueError, match="edges"):
        GraphAttentionFusion(n_tokens=3, token_dim=8, out_dim=4, heads=2)


def test_eof_residual_fusion_methods_start_as_the_eof_code_and_train_like_the_others():
    """Issue 24: encoder="eof_residual" wraps the scheme; the method's embedding of a day (its
    72 x 144 inference view, resampled back to the EOF grid) is the EOF code at
    initialisation, mode dropout still applies, and the loss trains the residual."""
    import numpy as np

    from geofusion.data.eof import fit_eof
    from geofusion.models.eof_residual import EOFResidualFusionEncoder

    data = fields(40, seed=1).numpy()
    code = fit_eof(data, np.linspace(-80, 80, GRID[0]), SMALL["latent_dim"])
    basis = {"components": torch.from_numpy(code.components),
             "sqrt_weights": torch.from_numpy(code.sqrt_weights),
             "mean": torch.from_numpy(code.mean)}
    torch.manual_seed(0)
    method = build_fusion_method("barlow_twins", kind="late", fusion="graph_attention",
                                 p_mode_dropout=0.3, grid=GRID, encoder="eof_residual",
                                 eof_basis=basis, **TINY_METHOD)
    assert isinstance(method, ModeDropoutMethod)
    assert isinstance(method.encoder, EOFResidualFusionEncoder)
    method.eval()
    x = fields(4)
    view = method.inference_view(x)
    assert view.shape[-2:] != GRID  # the contrastive methods' 72 x 144 view
    back = torch.nn.functional.interpolate(view, size=GRID, mode="bilinear",
                                           align_corners=False)
    with torch.no_grad():
        np.testing.assert_allclose(method.embed(x).numpy(), code.encode(back.numpy()),
                                   rtol=1e-4, atol=1e-4)
    method.train()
    loss, _ = method.loss((fields(8), torch.zeros(8, dtype=torch.long)),
                          torch.Generator().manual_seed(0))
    loss.backward()
    assert method.encoder.base.fuse.proj.weight.grad.abs().sum() > 0
    # Cost: the base's parameters and FLOPs (attention included) plus the EOF projection.
    wrapped, alone = fusion_cost(method.encoder), fusion_cost(method.encoder.base)
    assert wrapped["parameters"] == alone["parameters"] + code.components.size
    assert wrapped["flops"] >= alone["flops"] + 2 * code.components.size
    with pytest.raises(ValueError, match="needs eof_basis"):
        build_fusion_method("barlow_twins", encoder="eof_residual", grid=GRID, **TINY_METHOD)
    with pytest.raises(ValueError, match="needs eof_basis"):
        build_fusion_method("barlow_twins", eof_basis=basis, grid=GRID, **TINY_METHOD)
    with pytest.raises(ValueError, match="unknown encoder"):
        build_fusion_method("barlow_twins", encoder="eof", grid=GRID, **TINY_METHOD)

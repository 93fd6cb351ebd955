"""Networks (METHOD §1): parameter counts, published key layout, shapes, upsampling, weight loading."""

from __future__ import annotations

import math
import os
import pickle
import re
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gemini_pl.errors import CheckpointError
from gemini_pl.nets import Deformer, GeminiNet, blocks
from gemini_pl.nets.blocks import pad_to_multiple, upsample2

SMALL = (8, 16, 32, 64, 128, 64, 32, 16, 8)
SMALL_DEF = (8, 16, 16, 16, 8)
OTHER = (16, 16, 32, 64, 128, 64, 32, 16, 8)  # differs from SMALL in the first level only


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_net(dims: int, seed: int = 0, out_channels: int = 1, widths=SMALL) -> GeminiNet:
    torch.manual_seed(seed)
    return GeminiNet(dims, 1, out_channels, widths=widths, deformer_widths=SMALL_DEF).eval()


@pytest.fixture(scope="module")
def net3d_default() -> GeminiNet:
    torch.manual_seed(0)
    return GeminiNet(3)


# ----------------------------------------------------------------------------- parameter counts


def test_param_counts_3d_default(net3d_default):
    net = net3d_default
    assert n_params(net) == pytest.approx(24.08e6, abs=0.005e6)
    assert n_params(net.backbone) == pytest.approx(23.54e6, abs=0.005e6)
    assert n_params(net.deformer) == pytest.approx(0.53e6, abs=0.005e6)
    # the rest is the head: conv k3 (32→16) + GN(16) + conv k1 (16→1)
    assert n_params(net.head) == (32 * 16 * 27 + 16) + 2 * 16 + (16 + 1)
    assert n_params(net) == n_params(net.backbone) + n_params(net.deformer) + n_params(net.head)


def test_param_counts_2d_default():
    torch.manual_seed(0)
    net = GeminiNet(2)
    assert n_params(net) == pytest.approx(8.03e6, abs=0.005e6)
    assert n_params(net.head) == (32 * 16 * 9 + 16) + 2 * 16 + (16 + 1)
    # flow conv: 32 → 2 channels, k3
    assert n_params(net.deformer.flow) == 2 * 32 * 9 + 2


# ----------------------------------------------------------------------------- published key layout


def _expected_official_shapes_3d() -> dict[str, tuple]:
    """The published 3D key layout at default widths, written out independently of the library."""
    k = (3, 3, 3)
    out: dict[str, tuple] = {}

    def double(prefix, cin, cout):
        out[f"{prefix}.double_conv.0.weight"] = (cout, cin, *k)
        out[f"{prefix}.double_conv.0.bias"] = (cout,)
        out[f"{prefix}.double_conv.1.weight"] = (cout,)
        out[f"{prefix}.double_conv.1.bias"] = (cout,)
        out[f"{prefix}.double_conv.3.weight"] = (cout, cout, *k)
        out[f"{prefix}.double_conv.3.bias"] = (cout,)
        out[f"{prefix}.double_conv.4.weight"] = (cout,)
        out[f"{prefix}.double_conv.4.bias"] = (cout,)

    double("unet.inc", 1, 32)
    for i, (cin, cout) in enumerate([(32, 64), (64, 128), (128, 256), (256, 512)], start=1):
        double(f"unet.down{i}.maxpool_conv.1", cin, cout)
    for i, (cin, cout) in enumerate([(512 + 256, 256), (256 + 128, 128), (128 + 64, 64), (64 + 32, 32)], start=1):
        double(f"unet.up{i}.conv", cin, cout)
    for i, (cin, cout) in enumerate([(64, 32), (32, 64), (64, 64), (64 + 64, 64), (64 + 32, 32)], start=1):
        out[f"deformer.0.Conv{i}.one_conv.0.weight"] = (cout, cin, *k)
        out[f"deformer.0.Conv{i}.one_conv.0.bias"] = (cout,)
        out[f"deformer.0.Conv{i}.one_conv.1.weight"] = (cout,)
        out[f"deformer.0.Conv{i}.one_conv.1.bias"] = (cout,)
    out["deformer.1.weight"] = (3, 32, *k)
    out["deformer.1.bias"] = (3,)
    out["res_conv.0.weight"] = (16, 32, *k)
    out["res_conv.0.bias"] = (16,)
    out["res_conv.1.weight"] = (16,)
    out["res_conv.1.bias"] = (16,)
    out["res_conv.3.weight"] = (1, 16, 1, 1, 1)
    out["res_conv.3.bias"] = (1,)
    return out


def test_official_state_dict_layout_3d(net3d_default):
    sd = net3d_default.official_state_dict()
    assert len(sd) == 100
    expected = _expected_official_shapes_3d()
    assert len(expected) == 100
    assert set(sd) == set(expected)
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert tuple(sd["unet.up1.conv.double_conv.0.weight"].shape)[1] == 512 + 256
    patterns = [
        r"unet\.inc\.double_conv\.[0134]\.(weight|bias)",
        r"unet\.down[1-4]\.maxpool_conv\.1\.double_conv\.[0134]\.(weight|bias)",
        r"unet\.up[1-4]\.conv\.double_conv\.[0134]\.(weight|bias)",
        r"deformer\.0\.Conv[1-5]\.one_conv\.[01]\.(weight|bias)",
        r"deformer\.1\.(weight|bias)",
        r"res_conv\.[013]\.(weight|bias)",
    ]
    for key in sd:
        assert any(re.fullmatch(p, key) for p in patterns), key
    # the values are the module's tensors (not copies with another content)
    assert torch.equal(sd["deformer.1.weight"], net3d_default.deformer.flow.weight)
    assert torch.equal(sd["unet.inc.double_conv.0.weight"], net3d_default.backbone.inc.double_conv[0].weight)


# ----------------------------------------------------------------------------- init


def test_init_groupnorm_ones_and_zero_biases():
    net = small_net(3)
    gns = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert len(gns) == 2 * 9 + 5 + 1  # backbone double blocks, deformer single blocks, head
    for m in gns:
        assert torch.equal(m.weight, torch.ones_like(m.weight))
        assert torch.equal(m.bias, torch.zeros_like(m.bias))
    # groups = C/8 (head: 4 groups of 16 channels)
    assert net.backbone.up1.conv.double_conv[1].num_groups == SMALL[5] // 8
    assert net.head[1].num_groups == 4
    # Kaiming-normal conv weights: not constant, zero mean-ish, bias zero
    w = net.backbone.up1.conv.double_conv[0].weight
    assert w.std() > 0.01
    assert torch.equal(net.backbone.inc.double_conv[0].bias, torch.zeros(SMALL[0]))
    # the flow conv starts near zero (identity deformation)
    assert net.deformer.flow.weight.abs().max() < 1e-3
    assert torch.equal(net.deformer.flow.bias, torch.zeros(3))


def _kaiming_std(fan_in: int) -> float:
    """std of ``kaiming_normal_(a=0.2, nonlinearity="leaky_relu")``, fan-in mode: gain / sqrt(fan_in)."""
    gain = math.sqrt(2.0 / (1.0 + 0.2**2))
    return gain / math.sqrt(fan_in)


@pytest.mark.parametrize("dims", [2, 3])
def test_flow_init_published_is_kaiming_like_the_other_convs(dims):
    torch.manual_seed(0)
    d = Deformer(dims, 32, flow_init="published")  # default widths: flow conv 32 → dims, k3
    k = 3**dims
    expected = _kaiming_std(32 * k)  # 2D: 1.3868 / sqrt(288) = 0.0817; 3D: 1.3868 / sqrt(864) = 0.0472
    assert expected == pytest.approx({2: 0.08172, 3: 0.04718}[dims], rel=1e-3)
    w = d.flow.weight.detach()
    assert w.shape == (dims, 32) + (3,) * dims
    assert float(w.std()) == pytest.approx(expected, rel=0.1)
    assert abs(float(w.mean())) < 3 * expected / math.sqrt(w.numel())
    assert torch.equal(d.flow.bias, torch.zeros(dims))
    # the same formula describes the other convs (Conv5: (64 + 32) inputs), i.e. the same init code
    w5 = d.body.Conv5.one_conv[0].weight.detach()
    assert float(w5.std()) == pytest.approx(_kaiming_std(96 * k), rel=0.05)
    # while the default starts the flow conv at N(0, 1e-5)
    torch.manual_seed(0)
    small = Deformer(dims, 32)
    assert small.flow_init == "small"
    assert float(small.flow.weight.detach().std()) == pytest.approx(1e-5, rel=0.1)


def test_flow_init_leaves_the_other_parameters_bit_identical():
    """The option draws the same random numbers: only the flow weight differs, by the std ratio."""
    torch.manual_seed(3)
    a = GeminiNet(2, 1, 2, widths=SMALL, deformer_widths=SMALL_DEF)
    next_a = torch.rand(4)
    torch.manual_seed(3)
    b = GeminiNet(2, 1, 2, widths=SMALL, deformer_widths=SMALL_DEF, flow_init="published")
    assert torch.equal(torch.rand(4), next_a)  # the generator ends at the same place
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if key != "deformer.flow.weight":
            assert torch.equal(sa[key], sb[key]), key  # head, built after the deformer, included
    ratio = _kaiming_std(SMALL_DEF[-1] * 9) / 1e-5
    assert torch.allclose(sb["deformer.flow.weight"], sa["deformer.flow.weight"] * ratio, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dims, size", [(2, 64), (3, 32)])
def test_flow_init_initial_displacement(dims, size):
    """Per voxel, φ_j = Σ_i w_ji c5_i over C·3^d inputs c5 (GN output after LeakyReLU: a mean square
    ≤ 1 per channel). Over w ~ N(0, σ²): E mean_v φ_j² ≤ σ² C 3^d, so mean |φ| ≤ σ sqrt(C 3^d)
    (× 3 for the spread of one draw of w). "small": σ = 1e-5 → 1.7e-4 (2D), 2.9e-4 (3D) × 3;
    "published": σ sqrt(C 3^d) = the Kaiming gain 1.39, i.e. a displacement of order one voxel.
    """
    g = torch.Generator().manual_seed(7)
    pair = torch.randn((1, 64) + (size,) * dims, generator=g)
    out = {}
    for init in ("small", "published"):
        torch.manual_seed(0)
        d = Deformer(dims, 32, flow_init=init).eval()
        with torch.no_grad():
            out[init] = d(pair)
    k = 3**dims
    small_bound = 3 * 1e-5 * math.sqrt(32 * k)
    assert float(out["small"].abs().mean()) < small_bound
    assert float(out["small"].abs().max()) < 10 * small_bound
    mean_pub = float(out["published"].abs().mean())
    assert 0.2 < mean_pub < 3 * _kaiming_std(32 * k) * math.sqrt(32 * k)
    # the same draw, scaled: the displacements are proportional too
    ratio = _kaiming_std(32 * k) / 1e-5
    assert torch.allclose(out["published"], out["small"] * ratio, rtol=1e-3, atol=1e-4)


def test_flow_init_unknown_is_refused():
    with pytest.raises(ValueError, match="flow_init"):
        GeminiNet(2, widths=SMALL, deformer_widths=SMALL_DEF, flow_init="zero")


def test_block_structure_leaky_relu():
    net = small_net(2)
    acts = [m for m in net.backbone.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 18
    assert all(a.negative_slope == 0.2 for a in acts)
    assert isinstance(net.backbone.down1.maxpool_conv[0], nn.MaxPool2d)


# ----------------------------------------------------------------------------- shapes, padding


@pytest.mark.parametrize(
    "dims, shape",
    [(2, (2, 1, 37, 50)), (2, (1, 1, 16, 33)), (3, (1, 1, 17, 20, 33))],
)
def test_output_shapes_odd_sizes(dims, shape):
    net = small_net(dims, out_channels=3)
    x = torch.randn(shape)
    with torch.no_grad():
        f = net.features(x)
        logits = net(x)
        fab, fba = net.flows_both_ways(f, f.flip(0))
        single = net.flow(f, f.flip(0))
    assert f.shape == (shape[0], SMALL[-1], *shape[2:])
    assert logits.shape == (shape[0], 3, *shape[2:])
    assert fab.shape == fba.shape == (shape[0], dims, *shape[2:])
    assert torch.allclose(fab, single, atol=1e-9, rtol=1e-5)


def test_pad_to_multiple_symmetric():
    x2 = torch.ones(1, 1, 5, 16)
    y, crop = pad_to_multiple(x2, 16)
    # 5 → 16: 11 zeros, 5 before and 6 after; the other axis untouched
    assert y.shape == (1, 1, 16, 16)
    assert y[0, 0, :, 0].tolist() == [0.0] * 5 + [1.0] * 5 + [0.0] * 6
    assert crop[2] == slice(5, 10) and crop[3] == slice(0, 16)
    assert torch.equal(y[tuple(crop)], x2)
    # already a multiple: returned as is
    z, crop_z = pad_to_multiple(y, 16)
    assert z is y and torch.equal(z[tuple(crop_z)], y)


def test_backbone_crop_matches_explicit_padding_2d():
    """The backbone pads symmetrically (extra voxel after) and crops back exactly."""
    net = small_net(2)
    x = torch.randn(1, 1, 37, 21)
    # 37 → 48 (5 before, 6 after); 21 → 32 (5 before, 6 after)
    xp = F.pad(x, (5, 6, 5, 6))
    with torch.no_grad():
        f = net.features(x)
        fp = net.features(xp)[:, :, 5:42, 5:26]
    assert torch.allclose(f, fp, atol=1e-6)


def test_deformer_crop_matches_explicit_padding_3d():
    net = small_net(3)
    c = 2 * SMALL[-1]
    pair = torch.randn(1, c, 5, 8, 7)
    # multiple of 4: 5 → 8 (1, 2), 8 unchanged, 7 → 8 (0, 1)
    padded = F.pad(pair, (0, 1, 0, 0, 1, 2))
    with torch.no_grad():
        a = net.deformer(pair)
        b = net.deformer(padded)[:, :, 1:6, :, 0:7]
    assert a.shape == (1, 3, 5, 8, 7)
    assert torch.allclose(a, b, atol=1e-12, rtol=1e-5)


# ----------------------------------------------------------------------------- upsampling convention


def test_upsample2_values_hand_computed():
    x2 = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    y2 = upsample2(x2)  # bilinear, align_corners=False
    assert y2.shape == (1, 1, 2, 4)
    assert torch.allclose(y2[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    x3 = torch.tensor([0.0, 1.0]).view(1, 1, 1, 1, 2)
    y3 = upsample2(x3)  # trilinear, align_corners=True
    assert y3.shape == (1, 1, 2, 2, 4)
    assert torch.allclose(y3[0, 0, 1, 1], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))


@pytest.mark.parametrize("dims", [2, 3])
def test_upsampling_mode_spy(monkeypatch, dims):
    calls = []
    real = F

    def interpolate(*args, **kwargs):
        calls.append(kwargs)
        return real.interpolate(*args, **kwargs)

    spy = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")})
    spy.interpolate = interpolate
    monkeypatch.setattr(blocks, "F", spy)
    net = small_net(dims)
    shape = (1, 1, 16, 16) if dims == 2 else (1, 1, 16, 16, 16)
    with torch.no_grad():
        f = net.features(torch.randn(shape))
        assert len(calls) == 4
        net.flow(f, f)
    assert len(calls) == 6  # 4 in the backbone decoder, 2 in the deformer
    want = ("bilinear", False) if dims == 2 else ("trilinear", True)
    for kw in calls:
        assert (kw["mode"], kw["align_corners"]) == want
        assert kw["scale_factor"] == 2


# ----------------------------------------------------------------------------- loading weights


def test_load_official_round_trip(tmp_path):
    src = small_net(2, seed=1, out_channels=3)
    # perturb GroupNorm parameters so that they are not the trivial init values
    with torch.no_grad():
        for m in src.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        src.deformer.flow.weight.normal_(0, 0.1)
    path = tmp_path / "official.pth"
    torch.save(src.official_state_dict(), path)
    dst = small_net(2, seed=2, out_channels=3)
    assert not torch.equal(dst.backbone.inc.double_conv[0].weight, src.backbone.inc.double_conv[0].weight)
    report = dst.load_official(path)
    assert len(report["loaded"]) == len(src.state_dict())
    assert report["ignored"] == []
    for (k1, v1), (k2, v2) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert k1 == k2
        assert torch.equal(v1, v2), k1
    x = torch.randn(2, 1, 19, 24)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
        fs, fd = src.features(x), dst.features(x)
        assert torch.equal(fs, fd)
        assert torch.equal(src.flow(fs[:1], fs[1:]), dst.flow(fd[:1], fd[1:]))


def test_load_official_accepts_wrapped_and_dataparallel(tmp_path):
    src = small_net(2, seed=3)
    sd = {"module." + k: v for k, v in src.official_state_dict().items()}
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    dst = small_net(2, seed=4)
    dst.load_official(path)
    assert torch.equal(dst.head[0].weight, src.head[0].weight)


def test_load_official_shape_mismatch_lists_key_and_shapes(tmp_path):
    other = small_net(2, seed=1, widths=OTHER)
    path = tmp_path / "other.pth"
    torch.save(other.official_state_dict(), path)
    dst = small_net(2, seed=2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        dst.load_official(path)
    msg = str(info.value)
    assert "unet.inc.double_conv.0.weight" in msg
    assert "(16, 1, 3, 3)" in msg and "(8, 1, 3, 3)" in msg
    assert str(path) in msg
    # nothing is loaded when the file does not match
    for k, v in dst.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_load_official_missing_and_unexpected_keys(tmp_path):
    src = small_net(2, seed=1)
    sd = src.official_state_dict()
    del sd["deformer.1.bias"]
    sd["unet.extra.weight"] = torch.zeros(3)
    sd["projector.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    dst = small_net(2, seed=2)
    with pytest.raises(CheckpointError) as info:
        dst.load_official(path)
    msg = str(info.value)
    assert "missing" in msg and "deformer" in msg and "bias" in msg
    assert re.search(r"deformer\.(1|flow)\.bias", msg)
    assert "unexpected" in msg
    assert "unet.extra.weight" in msg and "projector.0.weight" in msg


def test_load_official_include_head_false_ignores_other_head(tmp_path):
    src = small_net(2, seed=1, out_channels=5)
    path = tmp_path / "head5.pth"
    torch.save(src.official_state_dict(), path)
    dst = small_net(2, seed=2, out_channels=1)
    head_before = {k: v.clone() for k, v in dst.head.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        dst.load_official(path)
    assert "res_conv.3.weight" in str(info.value)
    report = dst.load_official(path, include_head=False)
    assert sorted(report["ignored"]) == sorted(k for k in src.official_state_dict() if k.startswith("res_conv."))
    assert not any(k.startswith("head.") for k in report["loaded"])
    for k, v in dst.head.state_dict().items():
        assert torch.equal(v, head_before[k])
    for (k, v1), v2 in zip(src.backbone.state_dict().items(), dst.backbone.state_dict().values()):
        assert torch.equal(v1, v2), k
    assert torch.equal(src.deformer.flow.weight, dst.deformer.flow.weight)


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_refused(tmp_path, writer):
    marker = tmp_path / "pwned"
    evil = {"unet.inc.double_conv.0.weight": torch.zeros(1), "payload": _Payload(str(marker))}
    path = tmp_path / "evil.pth"
    if writer == "torch":
        torch.save(evil, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(evil, fh)
    net = small_net(2)
    with pytest.raises(CheckpointError):
        net.load_official(path)
    assert not marker.exists()
    # positive control: the payload is live when the file is unpickled without the guard
    if writer == "pickle":
        with open(path, "rb") as fh:
            pickle.load(fh)
        assert marker.exists()


def test_load_official_missing_file_and_non_tensor(tmp_path):
    net = small_net(2)
    with pytest.raises(CheckpointError):
        net.load_official(tmp_path / "nope.pth")
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError):
        net.load_official(path)


# ----------------------------------------------------------------------------- split GroupNorm


@pytest.mark.parametrize("shape, groups", [((2, 32, 5, 6, 7), 4), ((1, 16, 9, 10), 2), ((3, 8, 11), 1)])
def test_split_group_norm_equals_torch_group_norm_with_gradients(shape, groups):
    """The var_mean-moment GroupNorm (used on CUDA) gives F.group_norm's values and all three gradients (fp64)."""
    from gemini_pl.nets.norm import group_norm_split

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 1).requires_grad_()
    w = torch.randn(shape[1], generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(shape[1], generator=g, dtype=torch.float64).requires_grad_()
    ours = group_norm_split(x, w, b, groups)
    ref = F.group_norm(x, groups, w, b)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    # hand-computed moments for one (sample, group): zero mean, unit variance before the affine
    per = shape[1] // groups
    xhat = (ours[0, :per] - b[:per].view(-1, *[1] * (len(shape) - 2))) / w[:per].view(-1, *[1] * (len(shape) - 2))
    assert abs(float(xhat.mean())) < 1e-10 and float(xhat.var(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    gy = torch.randn(shape, generator=g, dtype=torch.float64)
    for a, r in zip(torch.autograd.grad(ours, (x, w, b), gy), torch.autograd.grad(ref, (x, w, b), gy)):
        torch.testing.assert_close(a, r, rtol=0, atol=1e-10)


def test_network_group_norms_keep_the_torch_type_and_keys():
    """The nets' GroupNorm is an nn.GroupNorm (init, checkpoints) and equals it on the CPU."""
    from gemini_pl.nets.norm import GroupNorm

    ours, ref = GroupNorm(4, 32), nn.GroupNorm(4, 32)
    assert isinstance(ours, nn.GroupNorm) and ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 32, 6, 6)
    torch.testing.assert_close(ours(x), ref(x))
    net = GeminiNet(spatial_dims=2, widths=[8, 16, 32, 64, 128, 64, 32, 16, 8])
    assert all(type(m) is GroupNorm for m in net.modules() if isinstance(m, nn.GroupNorm))


# ----------------------------------------------------------------------------- max-pool on the CPU
@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (1, 2, 7, 9), (1, 2, 6, 5, 7), (2, 1, 4, 4, 4)])
def test_max_pool_inference_takes_the_corner_maximum_with_max_pools_values(shape, monkeypatch):
    """Without a gradient the networks' max-pool never calls PyTorch's kernel and gives its values
    (odd sizes drop the last slice; a NaN propagates); with one it is PyTorch's kernel (its gradient)."""
    from gemini_pl.nets.blocks import maxpool_nd

    torch.manual_seed(0)
    x = torch.randn(shape)
    x.view(-1)[5] = float("nan")
    ndim = len(shape) - 2
    native = (F.max_pool2d, F.max_pool3d)[ndim - 2]
    want = native(x, 2)
    pool = maxpool_nd(ndim)(2)
    assert isinstance(pool, (nn.MaxPool2d, nn.MaxPool3d)[ndim - 2])
    name = f"max_pool{ndim}d"
    calls = []
    real = getattr(F, name)
    monkeypatch.setattr(F, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        got = pool(x)
    assert calls == [] and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    xg = torch.randn(shape, requires_grad=True)
    pool(xg).sum().backward()
    assert calls == [1]
    ref = xg.detach().clone().requires_grad_()
    real(ref, 2).sum().backward()
    assert torch.equal(xg.grad, ref.grad)

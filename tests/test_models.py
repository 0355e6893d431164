"""The MambaVision family: structure, parameter counts, numerics, forward/backward, timm API."""
from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from spec_strategies import model_specs

import mvlab
from mvlab.errors import SpecError
from mvlab.grammar import PRESETS, MixerOptions, format_spec, set_option
from mvlab.models import MambaVision, build_model, create_model, set_scan_backend
from mvlab.models.blocks import Attention, MambaVisionMixer, from_tokens, to_tokens
from mvlab.ops.scan import selective_scan_reference

# Parameter counts of NVIDIA's reference modules (1000 classes), from docs/mambavision facts.
REFERENCE_PARAMS = {"T": 31_794_248, "T2": 35_104_008, "S": 50_140_584, "B": 97_685_288,
                    "L": 227_961_048, "L2": 241_554_824}


def meta_model(spec, **kwargs) -> MambaVision:
    with torch.device("meta"):
        return MambaVision(spec, **kwargs)


@pytest.mark.parametrize("name", list(REFERENCE_PARAMS))
def test_preset_parameter_count_equals_reference(name):
    model = meta_model(PRESETS[name])
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMS[name]


def test_l3_is_the_740m_model():
    count = sum(p.numel() for p in meta_model(PRESETS["L3"]).parameters())
    assert round(count / 1e6, 1) == 739.6


def test_module_names_follow_the_official_checkpoints():
    keys = set(meta_model(PRESETS["B"]).state_dict())
    expected = [
        "patch_embed.conv_down.0.weight", "patch_embed.conv_down.1.running_mean",
        "patch_embed.conv_down.3.weight", "patch_embed.conv_down.4.bias",
        "levels.0.blocks.0.conv1.weight", "levels.0.blocks.0.conv1.bias",
        "levels.0.blocks.0.norm1.weight", "levels.0.blocks.0.conv2.weight",
        "levels.0.blocks.0.norm2.running_var", "levels.0.downsample.reduction.0.weight",
        "levels.2.blocks.0.norm1.weight", "levels.2.blocks.0.mixer.in_proj.weight",
        "levels.2.blocks.0.mixer.conv1d_x.weight", "levels.2.blocks.0.mixer.conv1d_z.weight",
        "levels.2.blocks.0.mixer.x_proj.weight", "levels.2.blocks.0.mixer.dt_proj.weight",
        "levels.2.blocks.0.mixer.dt_proj.bias", "levels.2.blocks.0.mixer.A_log",
        "levels.2.blocks.0.mixer.D", "levels.2.blocks.0.mixer.out_proj.weight",
        "levels.2.blocks.0.gamma_1", "levels.2.blocks.0.gamma_2",
        "levels.2.blocks.0.mlp.fc1.weight", "levels.2.blocks.0.mlp.fc2.bias",
        "levels.2.blocks.9.mixer.qkv.weight", "levels.2.blocks.9.mixer.qkv.bias",
        "levels.2.blocks.9.mixer.proj.weight", "levels.3.blocks.4.mixer.proj.bias",
        "norm.weight", "norm.running_mean", "head.weight", "head.bias",
    ]
    assert [k for k in expected if k not in keys] == []
    assert "levels.3.downsample.reduction.0.weight" not in keys
    assert not any(k.startswith("levels.0.blocks.0.gamma") for k in keys)
    # No layer scale in T: no gamma parameters at all; biases only where the reference has them.
    t_keys = set(meta_model(PRESETS["T"]).state_dict())
    assert not any("gamma" in k for k in t_keys)
    assert not any(k.endswith(("in_proj.bias", "conv1d_x.bias", "x_proj.bias", "out_proj.bias"))
                   for k in t_keys)


def test_init_follows_the_reference():
    torch.manual_seed(0)
    model = build_model("tiny")
    mixer = model.levels[2].blocks[0].mixer
    assert torch.equal(mixer.dt_proj.bias, torch.zeros_like(mixer.dt_proj.bias))
    assert mixer.dt_proj.weight.std().item() < 0.05  # trunc-normal(.02), not the Mamba dt init
    n = mixer.d_state
    assert torch.allclose(mixer.A_log, torch.log(torch.arange(1, n + 1.0)).expand_as(mixer.A_log))
    assert torch.equal(mixer.D, torch.ones_like(mixer.D))
    assert mixer.dt_rank == math.ceil(64 / 16)


def test_mixer_counts_the_dt_bias_twice():
    torch.manual_seed(0)
    mixer = MambaVisionMixer(32, MixerOptions(d_state=4), scan_backend="reference")
    torch.nn.init.normal_(mixer.dt_proj.bias, std=0.5)
    x = torch.randn(2, 10, 32)
    xz = mixer.in_proj(x).transpose(1, 2)
    u, z = xz.chunk(2, dim=1)
    u = F.silu(F.conv1d(u, mixer.conv1d_x.weight, padding=1, groups=16))
    z = F.silu(F.conv1d(z, mixer.conv1d_z.weight, padding=1, groups=16))
    dbl = u.transpose(1, 2) @ mixer.x_proj.weight.T
    dt, B, C = dbl.split([mixer.dt_rank, 4, 4], dim=-1)
    # softplus(W dt + 2 b), written out with the bias added twice by hand
    delta = (dt @ mixer.dt_proj.weight.T + 2 * mixer.dt_proj.bias).transpose(1, 2)
    y = selective_scan_reference(u, delta, -torch.exp(mixer.A_log), B.transpose(1, 2),
                                 C.transpose(1, 2), mixer.D, delta_softplus=True)
    expected = mixer.out_proj(torch.cat([y, z], dim=1).transpose(1, 2))
    torch.testing.assert_close(mixer(x), expected, rtol=1e-5, atol=1e-6)


def _channel_major_mixer(mixer, x):
    """Every mixer variant written out on (batch, channels, L) tensors with conv1d and explicit
    padding: what the token-major implementation must equal."""
    k, half, opts = mixer.conv1d_x.weight.shape[-1], mixer.d_half, mixer.opts

    def conv(t, weight):
        pad = (k - 1, 0) if opts.conv1d == "causal" else ((k - 1) // 2, k // 2)
        return F.conv1d(F.pad(t, pad), weight, groups=half)

    xz = mixer.in_proj(x).transpose(1, 2)
    u, z = (xz, None) if xz.shape[1] == half else xz.chunk(2, dim=1)
    u = F.silu(conv(u, mixer.conv1d_x.weight))
    if opts.branch:
        z = F.silu(conv(z, mixer.conv1d_z.weight))
    dt, B, C = (u.transpose(1, 2) @ mixer.x_proj.weight.T).split(
        [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
    delta = (dt @ mixer.dt_proj.weight.T + 2 * mixer.dt_proj.bias).transpose(1, 2)
    gate = z if (not opts.branch and opts.out == "gate") else None
    y = selective_scan_reference(u, delta, -torch.exp(mixer.A_log), B.transpose(1, 2),
                                 C.transpose(1, 2), mixer.D, z=gate, delta_softplus=True)
    if opts.branch:
        y = torch.cat([y, z], dim=1) if opts.out == "concat" else y * z
    return mixer.out_proj(y.transpose(1, 2))


@pytest.mark.parametrize("d_conv", [2, 3, 4])
@pytest.mark.parametrize("branch,out", [(True, "concat"), (True, "gate"), (False, "gate"),
                                        (False, "concat")])
@pytest.mark.parametrize("conv1d", ["regular", "causal"])
def test_token_major_mixer_equals_the_channel_major_formulation(d_conv, branch, out, conv1d):
    torch.manual_seed(0)
    opts = MixerOptions(d_state=4, d_conv=d_conv, branch=branch, out=out, conv1d=conv1d)
    mixer = MambaVisionMixer(24, opts, scan_backend="reference")
    torch.nn.init.normal_(mixer.dt_proj.bias, std=0.5)
    x = torch.randn(3, 11, 24)
    torch.testing.assert_close(mixer(x), _channel_major_mixer(mixer, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("branch", [True, False])
@pytest.mark.parametrize("out", ["concat", "gate"])
@pytest.mark.parametrize("conv1d", ["regular", "causal"])
def test_mixer_variants_run_and_causal_means_causal(branch, out, conv1d):
    torch.manual_seed(0)
    mixer = MambaVisionMixer(16, MixerOptions(branch=branch, out=out, conv1d=conv1d))
    assert hasattr(mixer, "conv1d_z") == branch
    x = torch.randn(1, 12, 16, requires_grad=True)
    y = mixer(x)
    assert y.shape == x.shape
    y[0, 5].sum().backward()
    future = x.grad[0, 6:].abs().sum().item()
    if conv1d == "causal":
        assert future == 0.0  # token 5 sees nothing after it
    else:
        assert future > 0.0  # the 'same' conv looks one token ahead


def test_attention_is_plain_softmax_attention():
    torch.manual_seed(0)
    attn = Attention(32, heads=4)
    x = torch.randn(2, 9, 32)
    q, k, v = attn.qkv(x).reshape(2, 9, 3, 4, 8).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 9, 32))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size, window", [((14, 14), 7), ((9, 11), 4), ((5, 3), 8), ((6, 6), None)])
def test_windows_are_row_major_and_padding_is_cropped(size, window):
    h, w = size
    x = torch.arange(2 * 3 * h * w, dtype=torch.float32).reshape(2, 3, h, w)
    tokens, shape = to_tokens(x, window)
    if window is None:
        assert tokens.shape == (2, h * w, 3)
    else:
        hp, wp = math.ceil(h / window) * window, math.ceil(w / window) * window
        assert tokens.shape == (2 * (hp // window) * (wp // window), window * window, 3)
        # first window of the first image: rows 0..window-1, row-major, zeros where padded
        padded = F.pad(x, (0, wp - w, 0, hp - h))
        first = padded[0, :, :window, :window].reshape(3, -1).T
        assert torch.equal(tokens[0], first)
    assert torch.equal(from_tokens(tokens, window, shape), x)


def test_forward_backward_at_224_and_non_divisible_sizes():
    torch.manual_seed(0)
    # T's windowing at a quarter of the stage-3 window: 14x14 -> four 7x7 windows at 224.
    spec = set_option(set_option("tiny", "s3.window", 7), "s4.window", 7)
    model = build_model(spec, num_classes=7, scan_backend="reference")
    for size in [(224, 224), (200, 120)]:  # then 13x8 and 7x4 maps: zero-padded windows
        model.zero_grad()
        x = torch.randn(2, 3, *size)
        logits = model(x)
        assert logits.shape == (2, 7) and torch.isfinite(logits).all()
        logits.square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert missing == []
    model.eval()
    with torch.no_grad():
        one = model(x[:1])
        assert torch.allclose(model(x)[:1], one, atol=1e-5)  # no leakage across the batch


def test_any_block_arrangement_builds_and_runs():
    spec = ("stem=8 mlp=2 drop_path=0.1 layer_scale=1e-5 | width=16 pattern=CM heads=1 window=3 "
            "| depth=2 width=32 pattern=attn_only heads=2 | width=32 pattern=MCA heads=2 "
            "branch=off out=gate b0.conv1d=causal | depth=1 width=64 pattern=conv")
    model = build_model(spec, num_classes=3)
    assert [level.letters for level in model.levels] == [("C", "M"), ("A", "A"),
                                                          ("M", "C", "A"), ("C",)]
    out = model(torch.randn(1, 3, 40, 40))
    out.sum().backward()
    assert out.shape == (1, 3)
    assert model.levels[2].blocks[0].mixer.causal


def test_spec_rebuilds_the_model_exactly():
    spec = set_option("tiny", "s3.pattern", "interleave:A")
    torch.manual_seed(1)
    model = build_model(spec)
    torch.manual_seed(1)
    again = build_model(model.spec)
    assert again.spec == model.spec == format_spec(spec)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_drop_path_ramp_covers_all_blocks():
    model = build_model("proxy")
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, "drop_prob") else 0.0
             for level in model.levels for b in level.blocks]
    assert len(rates) == 16 and rates[0] == 0.0
    assert rates[-1] == pytest.approx(0.1)
    # one ramp over all blocks, conv blocks included
    assert all(b > a for a, b in zip(rates[:-1], rates[1:], strict=True))


def test_timm_create_model_and_api():
    torch.manual_seed(0)
    model = timm.create_model("mambavision_tiny", num_classes=10)
    assert isinstance(model, MambaVision) and model.pretrained_cfg["first_conv"] == \
        "patch_embed.conv_down.0"
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (2, 128, 2, 2)
    assert model.forward_head(features, pre_logits=True).shape == (2, 128)
    assert model.forward_head(features).shape == (2, 10)
    final, inter = model.forward_intermediates(x)
    assert [t.shape[1] for t in inter] == [16, 32, 64, 128]
    assert torch.allclose(final, features)
    only = model.forward_intermediates(x, indices=[1], intermediates_only=True, stop_early=True)
    assert len(only) == 1 and torch.allclose(only[0], inter[1])
    nwd = model.no_weight_decay()
    assert "levels.2.blocks.0.mixer.A_log" in nwd and "levels.3.blocks.0.mixer.D" in nwd
    assert all(name.endswith(("A_log", ".D")) for name in nwd)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    from timm.optim import create_optimizer_v2
    groups = create_optimizer_v2(model, "adamw", weight_decay=0.05).param_groups
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.levels[2].blocks[0].mixer.A_log) in no_decay
    matcher = model.group_matcher()
    assert matcher["stem"] == r"^patch_embed"
    from timm.models import group_parameters
    assert len(group_parameters(model, matcher)) >= 4


def test_timm_features_only_and_every_preset_name():
    features = timm.create_model("mambavision_tiny", features_only=True, out_indices=(1, 3))
    outs = features(torch.randn(1, 3, 96, 96))
    assert [o.shape for o in outs] == [(1, 32, 12, 12), (1, 128, 3, 3)]
    assert features.feature_info.channels() == [32, 128]
    for name in ("mambavision_t", "mambavision_t2", "mambavision_s", "mambavision_b",
                 "mambavision_l", "mambavision_l2", "mambavision_l3", "mambavision_proxy"):
        assert timm.is_model(name)
    with torch.device("meta"):
        t = timm.create_model("mambavision_t", num_classes=100)
    assert t.spec == format_spec(PRESETS["T"]) and t.head.out_features == 100
    spec_model = timm.create_model("mambavision_spec", spec=format_spec(PRESETS["tiny"]),
                                   num_classes=3)
    assert spec_model.spec == format_spec(PRESETS["tiny"])


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = build_model("tiny", num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for a, p in zip(plain, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)


def test_create_model_dispatch_and_scan_backend():
    assert create_model("tiny", num_classes=2).head.out_features == 2
    assert create_model(format_spec(PRESETS["tiny"])).spec == format_spec(PRESETS["tiny"])
    assert isinstance(create_model("mambavision_tiny"), MambaVision)
    assert not isinstance(create_model("resnet10t", num_classes=2), MambaVision)
    model = mvlab.build_model("tiny", scan_backend="reference")
    assert model.scan_backend == "reference"
    set_scan_backend(model, "auto")
    assert all(m.scan_backend == "auto" for m in model.modules()
               if isinstance(m, MambaVisionMixer))
    with pytest.raises(ValueError, match="unknown scan backend"):
        set_scan_backend(model, "nonsense")
    with pytest.raises(SpecError):
        build_model("stem=8 | width=1")


@settings(max_examples=6, deadline=None)
@given(model_specs(max_depth=2, max_width_units=2))
def test_random_specs_build_and_run(spec):
    model = build_model(spec, num_classes=3, scan_backend="reference")
    out = model(torch.randn(1, 3, 36, 28))
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    assert build_model(model.spec, num_classes=3).spec == model.spec

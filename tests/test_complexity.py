"""Analytic complexity: params equal the built module, MACs equal PyTorch's own flop counter."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from spec_strategies import model_specs
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mvlab.grammar import PRESETS, MixerOptions, set_option
from mvlab.models import MambaVision, build_model, complexity
from mvlab.models.blocks import MambaVisionMixer
from mvlab.models.dims import MixerDims


@settings(max_examples=15, deadline=None)
@given(model_specs(max_depth=3, max_width_units=4))
def test_analytic_params_equal_the_module(spec):
    with torch.device("meta"):
        model = MambaVision(spec, num_classes=17)
    assert complexity(spec, 64, num_classes=17).params == sum(
        p.numel() for p in model.parameters())


# Every (branch, out) pair of the mixer's table, with widths whose dt rank rounds up (ceil(w/16)),
# odd half-widths, expand > 1 and d_state, d_conv off their defaults.
MIXER_VARIANTS = [
    (40, MixerOptions()),
    (40, MixerOptions(out="gate")),
    (40, MixerOptions(branch=False, out="gate")),
    (40, MixerOptions(branch=False, out="concat")),
    (33, MixerOptions(expand=2, d_state=5, d_conv=4, conv1d="causal")),
    (17, MixerOptions(expand=2, d_state=1, d_conv=2, branch=False, out="gate")),
    (50, MixerOptions(expand=2, d_state=16, out="gate", conv1d="causal")),
    (24, MixerOptions(expand=2, d_conv=5, branch=False, out="concat")),
]


@pytest.mark.parametrize("width, opts", MIXER_VARIANTS,
                         ids=lambda v: v if isinstance(v, int) else f"{v.branch}-{v.out}-{v.expand}")
def test_mixer_module_and_analytic_count_share_one_shape_arithmetic(width, opts):
    dims = MixerDims.of(width, opts)
    mixer = MambaVisionMixer(width, opts, scan_backend="reference")
    assert sum(p.numel() for p in mixer.parameters()) == dims.params
    assert (mixer.in_proj.out_features, mixer.out_proj.in_features, mixer.x_proj.out_features,
            mixer.dt_proj.in_features) == (dims.in_proj_out, dims.out_proj_in, dims.x_proj_out,
                                           dims.dt_rank)
    assert hasattr(mixer, "conv1d_z") == dims.branch
    assert mixer.conv1d_x.weight.numel() * (2 if dims.branch else 1) == dims.conv_weights
    # MACs per token as FlopCounterMode sees the module (the reference scan is elementwise).
    # A causal or even-sized conv computes a few padded outputs it then drops, which the
    # paper-style count leaves out: compared where the conv computes exactly the tokens.
    tokens = 7
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        mixer(torch.randn(2, tokens, width))
    if opts.conv1d == "regular" and opts.d_conv % 2:
        assert counter.get_total_flops() == 2 * 2 * tokens * dims.weights_per_token


def test_mixer_dims_refuse_an_odd_inner_width():
    # x and z are the two halves of in_proj's output: the grammar rejects an odd width*expand
    # and so does a mixer built directly
    with pytest.raises(ValueError, match="even"):
        MixerDims.of(17, MixerOptions(expand=3))


@pytest.mark.parametrize("spec, size", [
    ("tiny", 64),
    (set_option(set_option("tiny", "s3.window", 3), "s4.window", 2), 72),  # padded windows
    (set_option(set_option("tiny", "pattern", "attn_only"), "branch", "off"), (40, 56)),
    (set_option(set_option("tiny", "out", "gate"), "s3.pattern", "MC"), 48),
])
def test_paper_macs_equal_torch_flop_counter(spec, size):
    # FlopCounterMode counts matmuls and convs (2 FLOPs per MAC) but not the elementwise
    # reference scan (a chunked scan would use matmuls):
    # exactly the paper-style convention. The math SDPA path makes attention visible to it.
    model = build_model(spec, num_classes=5, scan_backend="reference").eval()
    h, w = (size, size) if isinstance(size, int) else size
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, h, w))
    assert complexity(spec, size, num_classes=5).macs * 2 == counter.get_total_flops()


def test_released_models_near_the_paper():
    # Paper GFLOPs (ptflops MACs): T 4.4, S 7.5, B 15.0; attention matmuls add ~2-3% here.
    for name, paper in (("T", 4.4), ("S", 7.5), ("B", 15.0), ("L", 34.9)):
        cost = complexity(name, 224)
        assert abs(cost.gmacs - paper) / paper < 0.05, (name, cost.gmacs)
        assert cost.macs_with_scan > cost.macs


def test_scan_cost_and_resolution_scaling():
    t = complexity("T", 224)
    stage3 = t.stages[2]
    assert stage3.tokens_per_window == 196 and stage3.num_windows == 1
    # 4 mixers x 196 tokens x 160 channels x (3*8 + 1)
    stage3_scan = 4 * 196 * 160 * 25
    assert stage3.scan_macs == stage3_scan
    big = complexity("T", 448)
    assert big.stages[2].num_windows == 4 and big.params == t.params
    # Conv and linear cost scale with pixels; windows keep attention linear in them too.
    assert 3.9 < big.macs / t.macs < 4.1
    padded = complexity("T", 256)  # 16x16 maps on 14x14 windows pad to 28x28
    assert padded.stages[2].padded_size == (28, 28) and padded.stages[2].num_windows == 4


def test_presets_params_match_reference():
    assert complexity("T").params == 31_794_248
    assert complexity("L2").params == 241_554_824
    assert complexity(PRESETS["tiny"], 64, num_classes=0).params == sum(
        p.numel() for p in build_model("tiny", num_classes=0).parameters())


def test_show_command_prints_layout_params_and_both_macs(capsys):
    from mvlab.cli import main

    assert main(["show", "T", "--img-size", "256"]) == 0
    out = capsys.readouterr().out
    assert "31,794,248" in out and "MMMMAAAA" in out and "padded to 28x28" in out
    cost = complexity("T", 256)
    assert f"{cost.gmacs:.3f} G" in out and f"{cost.gmacs_with_scan:.3f} G" in out
    assert main(["show", "tiny", "--set", "s3.pattern=last_n:6"]) == 2
    assert "stage 3: last_n:6 needs depth >= 6, got 2" in capsys.readouterr().err


@pytest.mark.parametrize("stride, size", [(2, 64), (1, 32), (2, (40, 56))])
def test_stem_stride_macs_equal_torch_flop_counter(stride, size):
    spec = set_option(set_option("tiny", "stem_stride", stride), "s4.pattern", "MA")
    model = build_model(spec, num_classes=5, scan_backend="reference").eval()
    h, w = (size, size) if isinstance(size, int) else size
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, h, w))
    assert complexity(spec, size, num_classes=5).macs * 2 == counter.get_total_flops()


@pytest.mark.parametrize("stride, size, maps", [
    (4, 64, [(16, 16), (8, 8), (4, 4), (2, 2)]),
    (2, 64, [(32, 32), (16, 16), (8, 8), (4, 4)]),
    (1, 32, [(32, 32), (16, 16), (8, 8), (4, 4)]),
])
def test_stem_stride_sets_the_token_maps(stride, size, maps):
    spec = set_option("tiny", "stem_stride", stride)
    model = build_model(spec, num_classes=3, scan_backend="reference").eval()
    with torch.no_grad():
        features = model.forward_intermediates(torch.randn(1, 3, size, size), intermediates_only=True)
    assert [tuple(f.shape[-2:]) for f in features] == maps
    assert [s.map_size for s in complexity(spec, size).stages] == maps
    assert [info["reduction"] for info in model.feature_info] == [stride * 2 ** i for i in range(4)]
    assert complexity(spec, size).params == complexity("tiny", size).params

"""timm's model contract on every registered ``mambavision_*`` name (docs/models.md).

The full-size presets are checked on the meta device (no memory, no arithmetic): timm's factory
kwargs, layout and output shapes. The numerics (FX feature extraction, forward_intermediates,
reset_classifier, torch.export) run on small real models: the tiny preset and a spec with the
big presets' code paths (windows that need padding, layer scale, odd depth, gated and causal
mixers). timm's own generic tests: tests/timm_model_tests_plugin.py.
"""
from __future__ import annotations

import io

import pytest
import timm
import torch

import mvlab  # noqa: F401  (registers the models)
from mvlab.models import TIMM_NAMES, complexity
from mvlab.ops.scan import ScanBackendUnavailable, available_backends

NAMES = timm.list_models("mambavision_*")
# torchvision notes that train-mode graphs have more nodes (DropPath): expected here
pytestmark = pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing")

# The code paths of the big presets (windows 14/7 with padding, layer scale) at test size: a
# 64 px input gives 4x4 and 2x2 maps in stages 3 and 4, padded to windows of 3.
WINDOWED = ("stem=8 mlp=2 drop_path=0.1 layer_scale=1e-05 | depth=1 width=16 pattern=conv | "
            "depth=1 width=16 pattern=conv | depth=3 width=32 pattern=last_half heads=2 window=3 "
            "d_state=4 d_conv=3 expand=1 branch=on conv1d=regular out=concat | depth=2 width=64 "
            "pattern=MA heads=4 window=3 d_state=4 d_conv=4 expand=1 branch=off conv1d=causal "
            "out=gate")
SMALL = {"tiny": dict(model_name="mambavision_tiny"),
         "windowed": dict(model_name="mambavision_spec", spec=WINDOWED)}


def small_model(which: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = dict(SMALL[which])
    return timm.create_model(kw.pop("model_name"), **kw, **kwargs)


def images(batch=2, seed=1) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def test_every_preset_and_the_spec_entry_point_are_registered():
    assert sorted(NAMES) == sorted([*TIMM_NAMES, "mambavision_spec"])


@pytest.mark.parametrize("name", NAMES)
def test_factory_kwargs_build_every_model_on_meta_in_any_dtype(name):
    with pytest.raises(TypeError):  # an unknown constructor argument is an error, not ignored
        timm.create_model(name, device="meta", not_a_model_arg=1)
    model = timm.create_model(name, device="meta", dtype=torch.bfloat16).eval()
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert {t.device.type for t in tensors.values()} == {"meta"}
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.bfloat16}
    assert sum(p.numel() for p in model.parameters()) == complexity(model.spec).params

    cfg = model.pretrained_cfg
    x = torch.empty(1, *cfg["input_size"], device="meta", dtype=torch.bfloat16)
    features = model.forward_features(x)
    assert features.shape == (1, model.num_features, *cfg["pool_size"])
    assert features.dtype == torch.bfloat16
    # a new head follows the network: device, dtype and eval mode
    model.reset_classifier(7)
    assert (model.head.weight.device.type, model.head.weight.dtype) == ("meta", torch.bfloat16)
    assert not model.head.training


@pytest.mark.parametrize("which", SMALL)
def test_fx_feature_extraction_equals_forward_intermediates(which):
    getter = small_model(which, features_only=True).eval()  # forward_intermediates
    fx = small_model(which, features_only=True, feature_cls="fx").eval()
    hook = small_model(which, features_only=True, feature_cls="hook").eval()
    x = images()
    with torch.no_grad():
        expected = getter(x)
        assert [f.shape[1] for f in expected] == getter.feature_info.channels()
        for got in (fx(x), hook(x)):
            for g, e in zip(got, expected, strict=True):
                torch.testing.assert_close(g, e)


@pytest.mark.parametrize("which", SMALL)
def test_fx_trace_keeps_the_scan_a_leaf_and_trains(which):
    from timm.models import create_feature_extractor, get_graph_node_names

    model = small_model(which, num_classes=5)
    _, eval_nodes = get_graph_node_names(model)
    scans = [n for n in eval_nodes if n.endswith("selective_scan")]
    mixers = [m for m in model.modules() if type(m).__name__ == "MambaVisionMixer"]
    assert len(scans) == len(mixers) > 0
    if which == "windowed":  # the padding and the crop decide at run time
        assert any(n.endswith("_pad_right_bottom") for n in eval_nodes)
        assert any(n.endswith("_crop") for n in eval_nodes)
    graph = create_feature_extractor(model, {"head": "logits"})
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(graph.eval()(x)["logits"], model.eval()(x))
    graph.train()(x)["logits"].mean().backward()
    assert [n for n, p in graph.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("which", SMALL)
def test_forward_intermediates_reset_classifier_and_pruning(which):
    model = small_model(which).eval()
    x = images()
    with torch.no_grad():
        final, stages = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [s.shape[1] for s in stages] == [i["num_chs"] for i in model.feature_info]
        assert [64 // s.shape[-1] for s in stages] == [i["reduction"] for i in model.feature_info]
        two = model.forward_intermediates(x, indices=[1, 2], stop_early=True,
                                          intermediates_only=True)
        for got, want in zip(two, stages[1:3], strict=True):
            torch.testing.assert_close(got, want)
        pre_logits = model.forward_head(final, pre_logits=True)

        model.to(torch.float64)
        model.reset_classifier(0)
        assert isinstance(model.head, torch.nn.Identity)
        pooled = model(x.double())
        assert pooled.dtype == torch.float64
        torch.testing.assert_close(pooled.float(), pre_logits, rtol=1e-4, atol=1e-5)
        model.reset_classifier(3, "")
        assert model.head.weight.dtype == torch.float64 and not model.head.training
        model.reset_classifier(0, "")
        assert model(x.double()).shape == final.shape  # no pooling, no head: the map

        model.to(torch.float32)
        take = model.prune_intermediate_layers([1])
        (only,) = model.forward_intermediates(x, indices=take, intermediates_only=True)
        torch.testing.assert_close(only, stages[1])


def test_torch_export_of_the_backbone_equals_eager():
    # cpu_c (the CPU default) is a custom op: one node per scan; without a C compiler the
    # reference loop is the exportable CPU backend
    backend = "cpu_c" if "cpu_c" in available_backends("cpu") else "reference"
    backbone = small_model("windowed", features_only=True, scan_backend=backend).eval()
    x = images(seed=1)
    program = torch.export.export(backbone, (x,))
    if backend == "cpu_c":
        targets = [str(node.target) for graph in program.graph_module.modules()
                   if isinstance(graph, torch.fx.GraphModule) for node in graph.graph.nodes]
        mixers = [m for m in backbone.modules() if type(m).__name__ == "MambaVisionMixer"]
        assert targets.count("mvlab.scan_cpu_c.default") == len(mixers)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    with torch.no_grad():
        for inputs in (x, images(seed=2)):  # a second input: nothing was folded in at export
            expected = backbone(inputs)
            for runner in (program.module(), loaded):
                got = runner(inputs)
                for g, e in zip(got, expected, strict=True):
                    torch.testing.assert_close(g, e)


def test_torch_export_of_a_backend_it_cannot_trace_says_which_can():
    backbone = small_model("tiny", features_only=True, scan_backend="chunked").eval()
    with pytest.raises(ScanBackendUnavailable, match="torch.export needs a traceable scan"):
        torch.export.export(backbone, (images(),))


def test_the_scan_on_meta_tensors_gives_shapes_only():
    from mvlab.ops import selective_scan

    batch, dim, length, n = 2, 6, 5, 3
    meta = dict(device="meta", dtype=torch.bfloat16)
    u, delta = torch.empty(batch, dim, length, **meta), torch.empty(batch, dim, length, **meta)
    A = torch.empty(dim, n, device="meta")
    B, C = torch.empty(batch, n, length, **meta), torch.empty(batch, n, length, **meta)
    y, last = selective_scan(u, delta, A, B, C, return_last_state=True)
    assert (y.device.type, y.shape, y.dtype) == ("meta", u.shape, torch.bfloat16)
    assert (last.shape, last.dtype) == ((batch, dim, n), torch.float32)  # the state stays fp32

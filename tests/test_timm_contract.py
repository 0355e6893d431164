"""timm's model contract on every registered ``mambavision_*`` name (docs/models.md).

Each name, as a model zoo tests itself: its registration, default_cfg, forward_features /
forward_head, forward_intermediates, features_only, reset_classifier,
prune_intermediate_layers and set_grad_checkpointing, on 32 px inputs. L, L2 and L3 run on
the meta device (shapes only); the others with real weights (values). Every name is also built
on meta in bf16 through timm's factory kwargs. FX, hook extraction and torch.export run on two
small models: the tiny preset and a spec with the big presets' code paths (windows that need
padding, layer scale, odd depth, gated and causal mixers). timm's own generic tests:
tests/timm_model_tests_plugin.py.
"""
from __future__ import annotations

import copy
import io
import subprocess
import sys

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
def test_each_name_is_registered_by_its_own_function(name):
    # a plain search for the name lands on its definition (timm's model-file convention)
    from timm.models import model_entrypoint

    import mvlab.models.mambavision as family

    fn = model_entrypoint(name)
    assert (fn.__name__, fn.__module__) == (name, family.__name__)
    assert getattr(family, name) is fn


@pytest.mark.slow
def test_importing_mvlab_models_registers_the_names():
    code = ("import timm, mvlab.models; "
            "print(timm.create_model('mambavision_t', device='meta').num_features)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "640", proc.stderr[-2000:]


# ---------------------------------------------------------------- the contract, name by name
# Real weights for all but L/L2/L3 (0.9-3 GB and seconds of init each): those are built on the
# meta device, where a forward gives shapes only; their code paths are B's with wider layers.
BIG = {"mambavision_l", "mambavision_l2", "mambavision_l3"}
# B's 98 M real parameters take 3-8 s a case on the shared CPU: the slow lane (CI runs it)
CONTRACT_NAMES = [pytest.param(n, marks=pytest.mark.slow) if n == "mambavision_b" else n
                  for n in NAMES]
PX = 32  # stage maps 8, 4, 2, 1: every stage runs, windows pad, and a forward stays cheap


def contract_model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, device="meta" if name in BIG else "cpu", **kwargs).eval()


def contract_input(model: torch.nn.Module, batch: int = 2) -> torch.Tensor:
    x = torch.randn(batch, 3, PX, PX, generator=torch.Generator().manual_seed(1))
    return x.to(next(model.parameters()).device)


def same(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal values on real tensors, equal shapes on meta ones."""
    assert got.shape == want.shape
    if got.device.type != "meta":
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_default_cfg(name):
    model = timm.create_model(name, device="meta")
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    assert cfg["architecture"] == name and cfg["num_classes"] == model.num_classes
    modules = dict(model.named_modules())
    first = modules[cfg["first_conv"]]
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == cfg["input_size"][0]
    assert modules[cfg["classifier"]] is model.get_classifier()
    reduction = model.feature_info[-1]["reduction"]
    assert tuple(cfg["pool_size"]) == tuple(n // reduction for n in cfg["input_size"][1:])
    assert len(cfg["mean"]) == len(cfg["std"]) == cfg["input_size"][0]
    assert 0 < cfg["crop_pct"] <= 1 and cfg["interpolation"] == "bicubic"
    assert f"{name}.{cfg['tag']}" in timm.list_pretrained(name + ".*") or not cfg["url"]


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_forward_features_and_forward_head(name):
    model = contract_model(name)
    x = contract_input(model)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, model.num_features, 1, 1)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (2, model.head_hidden_size)
        logits = model.forward_head(features)
        assert logits.shape == (2, model.num_classes)
        same(model(x), logits)
        same(model.get_classifier()(pre_logits), logits)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_forward_intermediates(name):
    model = contract_model(name)
    x = contract_input(model)
    with torch.no_grad():
        final, stages = model.forward_intermediates(x)
        same(final, model.forward_features(x))
        assert [f.shape[1] for f in stages] == [i["num_chs"] for i in model.feature_info]
        assert [PX // f.shape[-1] for f in stages] == [i["reduction"] for i in model.feature_info]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        for got, want in zip(last_two, stages[2:], strict=True):
            same(got, want)
        first, early = model.forward_intermediates(x, indices=[0], stop_early=True)
        same(early[0], stages[0])
        same(first, stages[0])  # stopped at the first stage's features: no downsample, no norm
        (normed,) = model.forward_intermediates(x, indices=[3], norm=True,
                                                intermediates_only=True)
        same(normed, final)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_features_only(name):
    backbone = contract_model(name, features_only=True, out_indices=(1, 3))
    classifier = contract_model(name)
    assert backbone.feature_info.channels() == [classifier.feature_info[i]["num_chs"]
                                                for i in (1, 3)]
    assert backbone.feature_info.reduction() == [classifier.feature_info[i]["reduction"]
                                                 for i in (1, 3)]
    x = contract_input(classifier)
    with torch.no_grad():
        stages = classifier.forward_intermediates(x, intermediates_only=True)
        got = backbone(x)
    assert len(got) == 2
    for g, want in zip(got, (stages[1], stages[3]), strict=True):
        same(g, want)  # the same seed builds the same weights


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_reset_classifier(name):
    model = contract_model(name)
    x = contract_input(model)
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        model.reset_classifier(5)
        assert model.num_classes == 5 and model.get_classifier().out_features == 5
        assert model(x).shape == (2, 5)
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), torch.nn.Identity)
        same(model(x), pre_logits)
        model.reset_classifier(0, "")
        same(model(x), features)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_prune_intermediate_layers(name):
    model = contract_model(name)
    x = contract_input(model)
    with torch.no_grad():
        stages = model.forward_intermediates(x, intermediates_only=True)
        pruned = copy.deepcopy(model)
        take = pruned.prune_intermediate_layers([0, 1])
        assert take == [0, 1] and len(pruned.levels) == 2
        assert pruned.levels[-1].downsample is None
        assert isinstance(pruned.get_classifier(), torch.nn.Identity)
        assert pruned.num_features == model.feature_info[1]["num_chs"]
        for got, want in zip(pruned.forward_intermediates(x, indices=take,
                                                          intermediates_only=True),
                             stages[:2], strict=True):
            same(got, want)
        same(pruned(x), stages[1])  # no norm, no pooling, no head: stage 1's map
        # keeping every stage drops only the head (and the norm when asked)
        whole = copy.deepcopy(model)
        whole.prune_intermediate_layers(4, prune_norm=True)
        assert len(whole.levels) == 4 and isinstance(whole.norm, torch.nn.Identity)
        same(whole.forward_features(x), stages[3])


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n in ("mambavision_b", "mambavision_s") else n
                                  for n in NAMES])  # two backward passes: S takes 5 s too
def test_set_grad_checkpointing(name):
    model = contract_model(name, drop_path_rate=0.0).train()
    x = contract_input(model)

    def grads() -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model(x).float().square().mean().backward()
        return [p.grad for p in model.parameters()]

    plain = grads()
    model.set_grad_checkpointing()
    assert all(level.grad_checkpointing for level in model.levels)
    checkpointed = grads()
    # on meta the scan is shape-only (no graph through it): there only shapes are compared
    assert x.device.type == "meta" or all(g is not None for g in checkpointed)
    for got, want in zip(checkpointed, plain, strict=True):
        if got is None or want is None:
            assert got is want
            continue
        same(got, want)  # BatchNorm's running stats move, its batch statistics do not
    model.set_grad_checkpointing(False)
    assert not any(level.grad_checkpointing for level in model.levels)


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

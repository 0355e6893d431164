"""The proxy trainer on the real built-in data and the real ``tiny`` preset (CPU)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from faulty_data import Faulty

from mvlab.cli import main
from mvlab.config_fields import changed_settings
from mvlab.data import DataConfig, build_data
from mvlab.errors import DataError, UserError
from mvlab.models import build_model, complexity
from mvlab.training.checkpoint import load_checkpoint, save_checkpoint
from mvlab.training.config import PRECISIONS, TrainConfig, TrainConfigError
from mvlab.training.models import start_early_part_from
from mvlab.training.optim import build_optimizer, param_groups
from mvlab.training.runtime import resolve_precision
from mvlab.training.trainer import LossNotFinite, check_losses, train

TIMING_KEYS = {"train_time_s", "epoch_time_s", "images_per_s"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return os.environ.get("MVLAB_CACHE") or str(tmp_path_factory.mktemp("mvlab-cache"))


def data_cfg(cache_dir: str, per_class: int, **kw) -> DataConfig:
    return DataConfig(per_class=per_class, val_per_class=5, resolution=32, cache_dir=cache_dir, **kw)


def fast_cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=16, lr=2e-3, warmup_epochs=0.5, device="cpu", precision="fp32")
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow  # 3 epochs: about 5 s
def test_short_run_on_builtin_data_lowers_the_loss(cache_dir, tmp_path):
    cfg = fast_cfg(epochs=3, batch_size=32, checkpoint_dir=str(tmp_path / "run"))
    result = train("tiny", data_cfg(cache_dir, per_class=30), cfg)

    assert result.status == "ok", result.reason
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.05, losses
    assert result.history[-1]["heldout_loss"] < math.log(10)  # better than a uniform guess
    for h in result.history:
        assert h["steps"] == 8 and h["train_images"] == 256 and h["images_per_s"] > 0
        assert 0 <= h["heldout_top1"] <= h["heldout_top5"] <= 100
    assert result.history[-1]["lr"] == pytest.approx(cfg.min_lr)  # the cosine ends at min_lr
    assert 0 <= result.val_top1 <= result.val_top5 <= 100 and result.val_loss > 0
    assert result.heldout_top1 == result.history[-1]["heldout_top1"]

    expected = complexity("tiny", img_size=32, num_classes=10)
    assert (result.params, result.macs, result.macs_with_scan) == (
        expected.params, expected.macs, expected.macs_with_scan)
    assert result.macs_with_scan > result.macs
    assert result.scan_backend not in ("auto", "n/a") and result.precision == "fp32"
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["status"] == "ok" and saved["val_top1"] == result.val_top1


@pytest.mark.slow  # two runs and a resume: about 7 s
def test_resumed_run_ends_exactly_where_the_uninterrupted_run_does(cache_dir, tmp_path):
    # EMA and mixup make the check cover the EMA state and NumPy's RNG (timm's Mixup draws there).
    cfg = fast_cfg(ema=True, mixup=0.4, cutmix=1.0, seed=3)
    data = data_cfg(cache_dir, per_class=10)
    full = train("tiny", data, dataclasses.replace(cfg, checkpoint_dir=str(tmp_path / "full")))
    assert full.status == "ok", full.reason

    broken = dataclasses.replace(cfg, checkpoint_dir=str(tmp_path / "resumed"))
    with pytest.raises(KeyboardInterrupt):
        train("tiny", Faulty(build_data(data, cfg.batch_size), 1, 2, "interrupt"), broken)
    assert load_checkpoint(tmp_path / "resumed")["epoch"] == 1
    resumed = train("tiny", data, dataclasses.replace(broken, resume=True))

    assert resumed.status == "ok" and resumed.resumed_from_epoch == 1
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "resumed")
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    drop = lambda hist: [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in hist]
    assert drop(full.history) == drop(resumed.history)
    assert (full.val_top1, full.val_top5, full.val_loss) == (
        resumed.val_top1, resumed.val_top5, resumed.val_loss)


def test_resume_under_different_settings_is_refused(cache_dir, tmp_path):
    data = build_data(data_cfg(cache_dir, per_class=4), 16)
    first = train("tiny", data, fast_cfg(epochs=1, checkpoint_dir=str(tmp_path)))
    assert first.status == "ok", first.reason
    with pytest.raises(UserError, match=r"train\.lr: 0\.002 -> 0\.01"):
        train("tiny", data, fast_cfg(epochs=1, lr=1e-2, checkpoint_dir=str(tmp_path), resume=True))


def test_a_checkpoint_from_before_the_amp_rename_resumes(cache_dir, tmp_path):
    """last.pt files written while the setting was called train.amp are the same run."""
    data = build_data(data_cfg(cache_dir, per_class=4), 16)
    assert train("tiny", data, fast_cfg(epochs=1, checkpoint_dir=str(tmp_path))).ok

    def write_as_before_the_rename(amp: str) -> None:
        state = load_checkpoint(tmp_path)
        settings = state["fingerprint"]["train"]
        settings.pop("precision", None)
        settings["amp"] = amp
        save_checkpoint(tmp_path, state)

    write_as_before_the_rename("fp32")
    resumed = train("tiny", data, fast_cfg(epochs=1, checkpoint_dir=str(tmp_path), resume=True))
    assert resumed.ok and resumed.resumed_from_epoch == 1
    write_as_before_the_rename("fp16")  # the old value is still compared under its new name
    with pytest.raises(UserError, match=r"train\.precision: 'fp16' -> 'fp32'"):
        train("tiny", data, fast_cfg(epochs=1, checkpoint_dir=str(tmp_path), resume=True))


@pytest.mark.slow  # two short runs
def test_precise_bn_sets_running_statistics_and_leaves_training_alone(cache_dir, tmp_path):
    # The same run with and without precise BatchNorm statistics: every training loss equal
    # (only BatchNorm layers run for the statistics, nothing random is drawn); the finished
    # precise run holds the plain average over its last epoch's last batches, the plain run
    # its exponential one.
    from mvlab.training.trainer import recompute_bn_stats

    data = build_data(data_cfg(cache_dir, per_class=8), 16)
    runs = {}
    for images in (0, 32):
        folder = tmp_path / str(images)
        result = train("tiny", data, fast_cfg(epochs=2, ema=True, precise_bn=images,
                                              checkpoint_dir=str(folder)))
        assert result.ok
        runs[images] = (result, load_checkpoint(folder)["model"])
    assert [h["train_loss"] for h in runs[0][0].history] == [
        h["train_loss"] for h in runs[32][0].history]

    last_two = list(data.train.batches(1, start=len(data.train) - 2))
    for images, (_, state) in runs.items():
        model = build_model("tiny", num_classes=10)
        model.load_state_dict(state)
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        saved = bn.running_mean.clone()
        recompute_bn_stats([model], last_two, torch.device("cpu"))
        assert torch.allclose(bn.running_mean, saved, atol=1e-5) == bool(images)
        assert bn.momentum == 0.1 and model.training  # restored after the recompute
        with torch.no_grad():  # the first BatchNorm sees the stem conv's output directly
            conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
            means = torch.stack([conv(x).mean((0, 2, 3)) for x, _ in last_two]).mean(0)
        torch.testing.assert_close(bn.running_mean, means, rtol=1e-4, atol=1e-5)


def test_nan_loss_ends_the_run_with_its_epoch_and_step(cache_dir, tmp_path):
    bundle = Faulty(build_data(data_cfg(cache_dir, per_class=10), 16), 0, 2, "nan")
    result = train("tiny", bundle, fast_cfg(checkpoint_dir=str(tmp_path)))

    assert result.status == "failed" and result.failure_kind == "nan"
    assert (result.failure_epoch, result.failure_step) == (0, 2)
    assert "nan at epoch 0, step 2" in result.reason
    assert result.epochs_completed == 0 and result.val_top1 is None
    assert json.loads((tmp_path / "result.json").read_text())["failure_kind"] == "nan"


class _OutOfMemoryAtStep:
    """A real tiny network that raises the CUDA allocator's error on its third training step."""

    def __init__(self):
        self.calls = 0

    def __call__(self, module, args):
        self.calls += 1
        if module.training and self.calls == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_is_reported_as_such(cache_dir):
    model = build_model("tiny", num_classes=10)
    model.register_forward_pre_hook(_OutOfMemoryAtStep())
    result = train(model, build_data(data_cfg(cache_dir, per_class=10), 16), fast_cfg())
    assert result.status == "failed" and result.failure_kind == "oom"
    assert (result.failure_epoch, result.failure_step) == (0, 2)
    assert "out of memory" in result.reason and "batch_size" in result.reason


def test_on_epoch_sees_metrics_and_can_stop_early(cache_dir):
    seen = []

    def on_epoch(epoch, metrics):
        seen.append((epoch, sorted(metrics)))
        return True

    result = train("tiny", build_data(data_cfg(cache_dir, per_class=10), 16), fast_cfg(epochs=3),
                   on_epoch=on_epoch)
    assert result.status == "ok" and result.stopped_early and result.epochs_completed == 1
    assert [e for e, _ in seen] == [0]
    assert {"train_loss", "lr", "heldout_top1", "heldout_top5", "epoch_time_s",
            "images_per_s"} <= set(seen[0][1])
    assert result.val_top1 is not None  # the reporting split is still evaluated

    class Pruned(Exception):
        pass

    def prune(epoch, metrics):
        raise Pruned(f"hopeless after epoch {epoch}")

    with pytest.raises(Pruned, match="hopeless after epoch 0"):  # the sweep prunes this way
        train("tiny", build_data(data_cfg(cache_dir, per_class=4), 16), fast_cfg(), on_epoch=prune)


def test_weight_decay_groups_exclude_norms_biases_A_log_and_D():
    model = build_model("tiny", num_classes=10)
    groups = {g["name"]: g for g in param_groups(model, 0.05)}
    decay, no_decay = set(groups["decay"]["names"]), set(groups["no_decay"]["names"])
    ssm = {n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] in ("A_log", "D")}

    assert any(n.endswith("A_log") for n in ssm) and any(n.endswith(".D") for n in ssm)
    assert ssm <= no_decay and not ssm & decay
    shapes = dict((n, p.shape) for n, p in model.named_parameters())
    assert all(len(shapes[n]) > 1 for n in decay)  # biases and norm scales are all 1-d
    assert all(len(shapes[n]) <= 1 or n in ssm for n in no_decay)
    assert groups["decay"]["weight_decay"] == 0.05 and groups["no_decay"]["weight_decay"] == 0.0

    for name in ("adamw", "lamb"):
        optimizer = build_optimizer(model, name, 1e-3, 0.05)
        zero = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
        params = dict(model.named_parameters())
        assert {id(params[n]) for n in ssm} <= zero
        assert not {id(params[n]) for n in decay} & zero


def test_cli_trains_and_reports_one_line_errors(cache_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["train", "tiny", "--data", "builtin", "--quiet", "--out", str(out), "--set",
                 "epochs=1", "batch_size=16", "lr=1e-3", "warmup_epochs=0", "device=cpu",
                 f"data.cache_dir={cache_dir}", "data.per_class=4", "data.val_per_class=2",
                 "data.resolution=32"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "val top-1" in printed and "params" in printed
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["lr"] == 1e-3 and result["data_manifest"]["resolution"] == 32

    diverging = ["--set", "epochs=1", "batch_size=16", "lr=1e30", "warmup_epochs=0", "clip_grad=null", "device=cpu",
                 f"data.cache_dir={cache_dir}", "data.per_class=4", "data.resolution=32", "--quiet"]
    assert main(["train", "tiny", *diverging]) == 1
    captured = capsys.readouterr()
    # One training step diverges the weights; the held-out evaluation is where it shows.
    assert captured.err.count("\n") == 1, captured.err
    assert "failed (nan): held-out loss became nan after epoch 0" in captured.err

    for bad, message in ((["--set", "train.lr=fast"], "train.lr: expected a number, got 'fast'"),
                         (["--set", "amp=bf16"], "train.amp is now train.precision"),
                         (["--set", "nonsense=1"], "nonsense"),
                         (["--set", "seed=1"], "both train.seed and data.seed"),
                         (["--set", "model.s3.depth=0"], "depth")):
        assert main(["train", "tiny", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


class DummyNet(torch.nn.Linear):
    def __init__(self):
        super().__init__(2, 2)


def test_early_init_seed_starts_only_the_stem_and_first_stages_from_its_seed(cache_dir, tmp_path):
    # train.early_init_seed: the stem and stages 1-2 start from that seed's weights, the rest
    # and every later draw (drop-path, order) from the run's seed. Given the run's own seed it
    # changes nothing, bit for bit; the early tensors equal a network built under that seed.
    spec = ("stem=8 drop_path=0.1 | depth=1 width=8 | depth=1 width=8 "
            "| depth=2 width=16 pattern=last_half heads=2 | depth=1 width=16 pattern=attn_only heads=2")
    data = build_data(data_cfg(cache_dir, per_class=8), 16)

    def first_state(**kw):
        folder = tmp_path / "-".join(f"{k}{v}" for k, v in kw.items())
        result = train(spec, data, fast_cfg(epochs=1, lr=1e-9, warmup_epochs=0, min_lr=0,
                                            checkpoint_dir=str(folder), **kw))
        assert result.ok, result.reason
        return result, load_checkpoint(folder)["model"]

    plain, plain_state = first_state(seed=1)
    same, _ = first_state(seed=1, early_init_seed=1)
    assert [h["train_loss"] for h in same.history] == [h["train_loss"] for h in plain.history]

    _, fixed = first_state(seed=1, early_init_seed=0, early_init_stages=2)
    torch.manual_seed(0)
    donor = build_model(spec, num_classes=10).state_dict()
    early = [k for k in fixed if k.startswith(("patch_embed.", "levels.0.", "levels.1."))]
    weights = [k for k in early if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    later = [k for k in fixed if k.startswith("levels.2.") and k.endswith("weight")]
    assert weights and later
    # lr 1e-9: one epoch moves no weight visibly
    assert [k for k in weights if not torch.allclose(fixed[k], donor[k], atol=1e-6)] == []
    assert not any(torch.allclose(plain_state[k], donor[k], atol=1e-6) for k in weights
                   if k.endswith("weight") and donor[k].float().std() > 0)  # not norms' ones
    assert all(torch.allclose(fixed[k], plain_state[k], atol=1e-6) for k in later)

    with pytest.raises(UserError, match=r"early_init_seed=0: DummyNet is not an mvlab spec"):
        start_early_part_from(DummyNet(), DummyNet, 0, 2)
    with pytest.raises(TrainConfigError, match="pass a spec string"):
        train(build_model(spec, num_classes=10), data, fast_cfg(epochs=1, early_init_seed=0))


@pytest.mark.parametrize("key, value, message", [
    ("early_init_stages", 4, r"early_init_stages=4: stages after the stem .* 0\.\.3 "),
    ("batch_size", 10**12, r"batch_size=1000000000000: must be an integer in 1\.\.65536"),
    ("epochs", 10**12, r"epochs=.*1\.\.100000"),
    ("threads", 10**6, r"threads=1000000: must be an integer in 1\.\.1024"),
    ("eval_batch_size", 0, r"eval_batch_size=0"),
    ("weight_decay", float("nan"), r"weight_decay=nan: must be a finite number"),
    ("warmup_lr", float("inf"), r"warmup_lr=inf: must be a finite number"),
    ("precise_bn", -1, r"precise_bn=-1: training images, must be an integer in 0\.\.1,000,000"),
])
def test_train_config_bounds_every_count_and_rejects_non_finite_rates(key, value, message):
    with pytest.raises(TrainConfigError, match=message):
        TrainConfig(**{key: value})


# -- one precision vocabulary, one coercion, one diff ------------------------------------------

REJECTED_PRECISIONS = ["true", "false", "fp8", "float64", "bf32", "amp16", "on", 16, True, False]


@pytest.mark.parametrize("value", [*PRECISIONS, *(k.upper() for k in PRECISIONS), None, "",
                                   *REJECTED_PRECISIONS])
def test_train_config_and_precision_resolution_accept_the_same_values(value):
    """amp="true" once passed TrainConfig and failed in resolve_precision ("half" the reverse):
    both must now agree on every value, accepted or not."""
    try:
        TrainConfig(precision=value)
        validated = True
    except TrainConfigError as exc:
        assert "use auto, fp32, fp16 or bf16" in str(exc)
        validated = False
    try:
        resolved = resolve_precision(value, torch.device("cpu"))
    except UserError:
        resolved = None
    assert validated == (resolved is not None), (value, resolved)
    if validated:
        meant = PRECISIONS[str(value or "auto").lower()]
        assert resolved == ("fp32" if meant == "auto" else meant)  # auto is fp32 on the CPU


def test_the_old_amp_key_points_at_precision():
    with pytest.raises(TrainConfigError, match=r"^train\.amp is now train\.precision"):
        TrainConfig.from_dict({"amp": "bf16"})


def test_configs_load_without_torch():
    """A study's --check, the CLI's help and the analysis read configs; none should pay for
    torch. Checked in a fresh interpreter (this one has torch loaded already), through the real
    package imports and a procedural DataConfig's validation."""
    code = ("import sys\n"
            "from mvlab.data.config import DataConfig\n"
            "from mvlab.training.config import TrainConfig, TrainResult\n"
            "TrainConfig.from_dict({'lr': '2e-3', 'precision': 'bf16'})\n"
            "DataConfig.from_dict({'dataset': 'same_different', 'scale': None})\n"
            "TrainResult().summary()\n"
            "heavy = [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_config_entry_point_coerces_values_alike(cache_dir):
    """--set text, a YAML/JSON dict and the from_dict constructors go through one coercion."""
    from mvlab.commands.train import build_configs

    _, train_cfg, data_cfg_ = build_configs("tiny", "builtin", [
        "lr=2e-3", "epochs=3.0", "opt_betas=[0.9, 0.95]", "compile=max-autotune",
        "channels_last=off", "data.scale=[0.3, 1]", "data.mean=0.5,0.5,0.5",
        f"data.cache_dir={cache_dir}"])
    from_dicts = (TrainConfig.from_dict({"lr": "2e-3", "epochs": 3.0, "opt_betas": [0.9, 0.95],
                                         "compile": "max-autotune", "channels_last": "off"}),
                  DataConfig.from_dict({"scale": [0.3, 1], "mean": "0.5,0.5,0.5",
                                        "cache_dir": cache_dir}))
    assert (train_cfg, data_cfg_) == from_dicts
    assert train_cfg.lr == 2e-3 and train_cfg.epochs == 3 and type(train_cfg.epochs) is int
    assert train_cfg.opt_betas == (0.9, 0.95) and train_cfg.channels_last is False
    assert data_cfg_.scale == (0.3, 1.0) and data_cfg_.mean == (0.5, 0.5, 0.5)
    for bad, message in (({"epochs": 2.5}, r"train\.epochs: expected an integer"),
                         ({"ema": "maybe"}, r"train\.ema: expected true/false"),
                         ({"lrr": 1}, r"unknown train option\(s\) lrr \(did you mean 'lr'\?\)")):
        with pytest.raises(TrainConfigError, match=message):
            TrainConfig.from_dict(bad)
    with pytest.raises(DataError, match=r"data\.mean: expected 3 values, got 2"):
        DataConfig.from_dict({"mean": [0.5, 0.5]})


def test_changed_settings_names_every_differing_leaf():
    before = {"train": {"lr": 0.002, "opt_betas": [0.9, 0.99], "gone": 1}, "spec": "a"}
    after = {"train": {"lr": 0.01, "opt_betas": (0.9, 0.99), "new": None}, "spec": "a"}
    # A tuple read back from JSON as a list is the same setting; a key missing on one side is
    # a change from or to None.
    assert changed_settings(before, after) == ["train.gone: 1 -> None", "train.lr: 0.002 -> 0.01"]
    assert changed_settings({"a": {"b": 1}}, {"a": 2}) == ["a: {'b': 1} -> 2"]


def test_batched_loss_check_names_the_first_bad_step_among_several():
    """On accelerators several steps' losses are checked at once: the failure must still name
    the first non-finite step and its global step, not the step the check ran at."""
    run = SimpleNamespace(dist=None, global_step=10)
    losses = [torch.tensor(v) for v in (1.0, 2.0, float("nan"), float("inf"))]
    with pytest.raises(LossNotFinite) as failed:
        check_losses(run, losses, epoch=2, last_step=7)
    assert (failed.value.epoch, failed.value.step) == (2, 6)
    assert "at epoch 2, step 6 (global step 8)" in failed.value.reason
    assert check_losses(run, losses[:2], epoch=2, last_step=5) == 3.0

"""Study files: validation with file/line/key errors, overrides, search-space expansion, the
early-stop rule and stale-trial detection. No training here (see test_sweep_e2e.py)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from study_texts import TINY_GRID

from mvlab import records
from mvlab.errors import StudyError
from mvlab.study import grid_points, load_study, load_study_text, population_points
from mvlab.study.space import point_key, resolve_point
from mvlab.study.storage import HOST_ATTR, PID_ATTR, START_ATTR, owner_attrs, stale_reason
from mvlab.study.trial import EARLY_TOP1, hopeless
from mvlab.study.types import EarlyStop

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

BASE = TINY_GRID


def _error(text: str, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(StudyError) as info:
        load_study_text(textwrap.dedent(text), "study.yaml", overrides)
    return str(info.value)


def test_valid_grid_expands_every_combination_times_seeds():
    config = load_study_text(BASE, "study.yaml")
    points = grid_points(config)
    assert len(points) == 2 * 2 * 2
    assert len({point_key(p) for p in points}) == len(points)
    # YAML's on/off booleans stay human-readable choices
    assert {p["branch"] for p in points} == {"on", "off"}
    plan = resolve_point(config, {"pattern": "attn_only", "branch": "off", "seed": 1})
    assert "pattern=attn_only" in plan.spec and "branch=off" in plan.spec
    assert plan.train.seed == 1 and plan.train.epochs == 2


@pytest.mark.parametrize("name", sorted(p.stem for p in EXPERIMENTS.glob("*.yaml")))
def test_shipped_experiments_validate(name):
    config = load_study(EXPERIMENTS / f"{name}.yaml")
    assert config.name == name
    if name == "hybrid_patterns":  # the paper's 5 placements + 2 pure mixers, 6 seeds first
        assert config.kind == "grid" and len(grid_points(config)) == 42
        assert config.sequential is not None and config.analysis.looks == 4
    if config.data.dataset == "pathfinder":  # --check names what sets the task's pixels
        from mvlab.study.plan import describe_plan
        line = next(x for x in describe_plan(config).splitlines() if x.startswith("data: "))
        assert f"contour_length={config.data.contour_length}" in line
        assert f"clearance={config.data.clearance}" in line


def test_unknown_key_names_file_line_and_suggests():
    message = _error(BASE.replace("train:\n  epochs: 2", "train:\n  epoch: 2"))
    assert message.startswith("study.yaml:7: train.epoch:")
    assert "did you mean 'epochs'" in message


def test_unknown_top_level_and_space_keys():
    assert "did you mean 'space'" in _error(BASE.replace("space:", "spaces:"))
    message = _error(BASE.replace("  branch: [on, off]", "  brnch: [on, off]"))
    assert message.startswith("study.yaml:14: space.brnch:") and "'branch'" in message


def test_wrong_type_is_reported_at_its_line():
    message = _error(BASE.replace("batch_size: 8", "batch_size: eight"))
    assert message.startswith("study.yaml:8: train.batch_size:")
    assert "integer" in message


def test_config_class_validation_error_points_at_the_key():
    message = _error(BASE.replace("resolution: 16", "resolution: 4"))
    # The key is named once: the config class's message already starts with it.
    assert message.startswith("study.yaml:4: data.resolution=4: must be at least 8"), message


def test_a_message_about_a_longer_key_does_not_hide_the_one_at_fault():
    from mvlab.study.schema import _Checker
    from mvlab.study.yamlsource import Located

    check = _Checker(Located({}, "study.yaml", {("train", "ema"): "study.yaml:4"}))
    # train.ema and train.ema_decay share a prefix: the key at fault is still named
    message = str(check.fail(("train", "ema"), "train.ema_decay=1.5: must be in [0, 1)"))
    assert message == "study.yaml:4: train.ema: train.ema_decay=1.5: must be in [0, 1)"
    assert str(check.fail(("train", "ema"), "train.ema=2: must be 0 or 1")) == (
        "study.yaml:4: train.ema=2: must be 0 or 1")


def test_impossible_grid_point_is_rejected_before_training():
    text = BASE.replace("pattern: [last_half, attn_only]", "s3.pattern: [last_half, 'last_n:3']")
    message = _error(text)
    assert message.startswith("study.yaml:13: space.s3.pattern:")
    assert "last_n:3" in message and "depth" in message


def test_overrides_apply_and_are_located():
    config = load_study_text(BASE, "study.yaml", ["train.epochs=5", "space.pattern=[mamba_only]",
                                                  "name=other"])
    assert config.train.epochs == 5 and config.name == "other"
    assert [d.choices for d in config.space if d.key == "pattern"] == [("mamba_only",)]
    message = _error(BASE, ("train.epochs=zero",))
    assert message.startswith("--set train.epochs: expected an integer"), message
    assert "did you mean 'train'" in _error(BASE, ("trian.epochs=1",))


def test_duplicate_keys_and_grid_ranges_are_errors():
    assert "given twice" in _error(BASE + "name: again\n")
    message = _error(BASE.replace("branch: [on, off]", "d_state: {int: [4, 16]}"))
    assert "study.yaml:14: space.d_state:" in message and "grid" in message


def test_kind_specific_keys():
    assert "n_trials" in _error(BASE.replace("kind: grid", "kind: optimize"))
    assert "needs n" in _error(BASE.replace("kind: grid", "kind: population"))
    assert "sobol or random" in _error(BASE.replace("kind: grid", "kind: population\n  n: 4\n"
                                                    "  sampler: tpe"))


def test_population_is_reproducible_and_inside_the_band():
    text = BASE.replace("kind: grid", "kind: population\n  n: 6\n  band: {params: [0.3M, 0.9M]}")
    text = text.replace("  branch: [on, off]", "  dim: {int: [8, 24], step: 8}\n"
                                               "  d_state: {int: [4, 16], log: true}")
    config = load_study_text(text, "study.yaml")
    first, second = population_points(config), population_points(config)
    assert first == second and len(first) == 6 * 2
    from mvlab.models import complexity

    for point in first:
        params = complexity(resolve_point(config, point).spec, 16, 10).params  # 10 classes
        assert 0.3e6 <= params <= 0.9e6
        assert 4 <= point["d_state"] <= 16 and point["dim"] == 16  # 8 and 24 miss the band


def _complete(number: int, throughput: float, early: float) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(values=[early + 10, throughput],
                                     user_attrs={"throughput": throughput, EARLY_TOP1: early})


def test_early_stop_rule_prunes_only_dominated_and_far_behind():
    config = load_study_text(BASE.replace("kind: grid", "kind: optimize\n  n_trials: 4\n"
                                          "  seeds: [0]").replace("  seeds: [0, 1]\n", "")
                             .replace("  branch: [on, off]", ""), "study.yaml")
    assert config.early_stop == EarlyStop(after_epoch=1, margin=5.0)
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.add_trial(_complete(0, throughput=100.0, early=60.0))
    # slower and 10 points behind the finished trial -> hopeless
    assert "trial 0" in hopeless(study, config, {"throughput": 90.0}, accuracy=50.0)
    # faster: not dominated, whatever its accuracy
    assert hopeless(study, config, {"throughput": 120.0}, accuracy=20.0) is None
    # slower but within the margin: kept
    assert hopeless(study, config, {"throughput": 90.0}, accuracy=56.0) is None


def test_stale_detection_uses_the_owner_process():
    alive = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                      user_attrs=owner_attrs())
    assert stale_reason(alive, stale_after_s=3600) is None
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING,
        user_attrs={**owner_attrs(), PID_ATTR: int(done.stdout), START_ATTR: None})
    assert "is gone" in stale_reason(dead, stale_after_s=3600)
    remote = optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING,
        user_attrs={HOST_ATTR: "elsewhere", PID_ATTR: 1, "heartbeat": 0.0})
    assert "no heartbeat" in stale_reason(remote, stale_after_s=60)


def test_cli_check_prints_the_plan_and_errors_exit_2(tmp_path, capsys):
    from mvlab.cli import main

    path = tmp_path / "study.yaml"
    path.write_text(BASE)
    assert main(["sweep", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    # 8 grid points, but attn_only with branch on and off is one network: 6 trials
    assert "study t: grid (grid), 6 trials" in out and "pattern: 2 choices" in out
    assert "collapsed: 2 point(s)" in out
    assert main(["sweep", str(path), "--check", "--set", "train.lr=-1"]) == 2
    err = capsys.readouterr().err
    assert err == "mvlab sweep: error: --set train.lr=-1.0: must be >= 0\n"  # the key once


# ------------------------------------------------- values that would pass and fail every trial
@pytest.mark.parametrize("override, key, words", [
    ("data.classes=[]", "data.classes", "empty"),
    ("data.std=[0, 0, 0]", "data.std", "> 0"),
    ("data.mean=[.nan, 0, 0]", "data.mean", "finite"),
    ("data.hflip=2", "data.hflip", "[0, 1]"),
    ("data.num_workers=-1", "data.num_workers", "0"),
    ("data.seed=-1", "data.seed", "0..4294967295"),
    ("data.resolution=100000", "data.resolution", "limit of 4096"),
    ("data.root=/somewhere", "data.root", "data.dataset=folder"),
    ("study.seeds=[0, -1]", "study.seeds.1", "0..4294967295"),
    ("study.seeds=[1099511627776]", "study.seeds.0", "0..4294967295"),
    ("study.sampler_seed=-1", "study.sampler_seed", "0..4294967295"),
    ("study.population_size=4", "study.population_size", "only the nsga2 sampler"),
    ("train.lr=.nan", "train.lr", "finite"),
    ("train.min_lr=.nan", "train.min_lr", "finite"),
    ("train.weight_decay=.inf", "train.weight_decay", "finite"),
    ("train.clip_grad=.nan", "train.clip_grad", "finite"),
    ("bench.batch_size=-5", "bench.batch_size", "1..65,536"),
    ("bench.warmup=-1", "bench.warmup", "0..100,000"),
    ("bench.repeats=0", "bench.repeats", "1..1,000"),
    ("bench.img_size=-224", "bench.img_size", "8..4096"),
    ("bench.threads=0", "bench.threads", "1..4,096"),
    ("bench.img_size=7", "bench.img_size", "8..4096"),
    ("train.optimizer=bogus", "train.optimizer", "is not a timm optimizer; try adamw or lamb"),
    ("data.heldout_fraction=0", "data.heldout_fraction", "0 leaves no held-out split, but "
                                                         "heldout_top1 needs one"),
    ("constraints={max_params: .nan}", "constraints.max_params", "finite number > 0"),
    ("early_stop={margin: -1}", "early_stop.margin", ">= 0"),
    ("analysis={noise: shared}", "analysis.noise", "expected one of paired, pooled"),
    ("early_stop={margin: .nan}", "early_stop.margin", "finite"),
    ("space={train.min_lr: [1.0e-5, .nan]}", "space.train.min_lr.1", "finite"),
    ("model=stem=8 | depth=1 width=8 | depth=1 width=8 | depth=1000000000 width=8 "
     "pattern=last_half | depth=1 width=8", "model", "depth=1000000000 is above the limit of 64"),
])
def test_values_that_would_fail_every_trial_fail_the_check(override, key, words):
    message = _error(BASE, (override,))
    given = override.split("=")[0]
    assert message.startswith(f"--set {given}"), message
    # The key is named once ("--set data.hflip=2.0: ..."); a key inside the value after it.
    rest = message[len(f"--set {given}"):]
    if key == given:
        assert not rest.startswith(f": {given}"), message
    else:
        assert rest.startswith(f": {key}:"), message
    assert words in message, message


@pytest.mark.parametrize("study, key, words", [
    ({"kind": "optimize", "n_trials": 4, "population_size": 0}, "population_size", "2..100,000"),
    ({"kind": "optimize", "n_trials": 4, "population_size": 1}, "population_size", "2..100,000"),
    ({"kind": "optimize", "n_trials": 4, "sampler": "tpe", "population_size": 8},
     "population_size", "only the nsga2"),
    ({"kind": "optimize", "n_trials": 10**9}, "n_trials", "limit of 100,000"),
    ({"kind": "population", "n": 10**9}, "n", "limit of 10,000"),
    ({"kind": "population", "n": 9000, "seeds": list(range(20))}, "n", "100,000 trials"),
])
def test_study_sizes_are_bounded(study, key, words):
    # population_size 0 used to be replaced by 16 without a word (`or 16` in the runner).
    text = BASE.replace("study:\n  kind: grid\n  seeds: [0, 1]\n", "").replace(
        "space:\n  pattern: [last_half, attn_only]\n  branch: [on, off]\n",
        "space:\n  s3.d_state: {int: [1, 16]}\n")
    study = {"seeds": [0], **study}
    message = _error(text, (f"study={study}",))
    assert f"study.{key}: " in message and words in message, message


def test_a_huge_population_checks_in_well_under_a_second(tmp_path, capsys):
    from mvlab.cli import main

    path = tmp_path / "study.yaml"
    path.write_text(BASE.replace("kind: grid", "kind: population\n  n: 1000000000").replace(
        "  pattern: [last_half, attn_only]\n  branch: [on, off]\n", "  s3.d_state: {int: [1, 16]}\n"))
    start = time.perf_counter()
    assert main(["sweep", str(path), "--check"]) == 2
    assert time.perf_counter() - start < 1.0
    assert "study.n: n=1000000000" in capsys.readouterr().err


# ------------------------------------------------------------------------- hostile YAML itself
def _laughs(levels: int) -> str:
    """A "billion laughs" document: 10**levels values from a few hundred bytes."""
    lines = ["x0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands():
    text = BASE + _laughs(9)  # 10**9 strings if expanded
    assert len(text.encode()) < 1000
    start = time.perf_counter()
    message = _error(text)
    assert time.perf_counter() - start < 5
    assert re.match(r"^study\.yaml:\d+: YAML aliases \(\*name\) expand this document past "
                    r"100,000 values", message), message


def test_a_few_aliases_still_work():
    text = BASE.replace("  pattern: [last_half, attn_only]", "  pattern: &p [last_half, attn_only]"
                        ).replace("  branch: [on, off]", "  s3.pattern: *p")
    config = load_study_text(text, "study.yaml")
    assert [d.choices for d in config.space] == [("last_half", "attn_only")] * 2


@pytest.mark.parametrize("where, text", [
    ("file", BASE + "description: &d [*d]\n"),
    ("file", BASE + "tracking: &t {uri: *t}\n"),
    ("--set", BASE),
])
def test_a_recursive_alias_is_one_line(where, text):
    overrides = ("description=&d [x, *d]",) if where == "--set" else ()
    message = _error(text, overrides)
    assert "a YAML alias refers to the value it is inside" in message, message
    assert message.startswith("--set description: " if overrides else "study.yaml:"), message


def test_an_alias_bomb_in_a_set_value_is_refused():
    flow = "{" + _laughs(7).strip().replace("\n", ", ") + "}"  # one line: a --set value
    message = _error(BASE, (f"description={flow}",))
    assert message.startswith("--set description: YAML aliases"), message


def test_deep_nesting_is_one_line_not_a_recursion_error():
    message = _error(BASE + "description: " + "[" * 5000 + "]" * 5000 + "\n")
    assert message == "study.yaml: YAML nested too deeply; a study needs a few levels"


def test_a_study_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_bytes(BASE.encode() + "description: caf\xe9\n".encode("latin-1"))
    with pytest.raises(StudyError) as info:
        load_study(path)
    line = BASE.count("\n") + 1
    assert str(info.value) == (f"{path}:{line}: not UTF-8 text (byte 0xe9); save the study file "
                               f"as UTF-8")


def test_a_band_nothing_fits_gives_up_after_a_bounded_number_of_draws(monkeypatch):
    from mvlab.study import space

    monkeypatch.setattr(space, "MAX_DRAWS", 1000)  # 100,000 by default: ~2 minutes at worst
    text = BASE.replace("kind: grid", "kind: population\n  n: 10000\n  band: {params: [1, 2]}"
                        ).replace("  pattern: [last_half, attn_only]\n  branch: [on, off]\n",
                                  "  train.lr: {float: [1.0e-4, 1.0e-2]}\n")
    config = load_study_text(text, "study.yaml", ("study.seeds=[0]",))
    with pytest.raises(StudyError, match=r"only 0 of n=10000 samples fit after 1024 draws"):
        population_points(config, measure=lambda spec: {"params": 1e6})


def test_a_renamed_train_key_is_named_in_the_study_file_and_on_the_command_line():
    text = TINY_GRID.replace("train:\n", "train:\n  amp: bf16\n", 1)
    assert "amp: bf16" in text
    assert "train.amp: renamed to 'precision'" in _error(text)
    assert "train.amp: renamed to 'precision'" in _error(TINY_GRID, ("train.amp=bf16",))


def test_a_study_started_before_a_key_was_renamed_resumes_and_a_real_change_does_not():
    from mvlab.study.preparation import _check_same_study

    config = load_study_text(TINY_GRID)
    old = config.fidelity()
    old["train"]["amp"] = old["train"].pop("precision")  # as mvlab stored it before the rename
    del old["train"]["precise_bn"]  # and before the key existed (its default is the old way)
    del old["data"]["clearance"]  # Pathfinder knobs: on the built-in set they change nothing
    del old["data"]["joints"]
    study = optuna.create_study()
    study.set_user_attr(records.STUDY_FIDELITY_HASH, "written-by-an-older-mvlab")
    study.set_user_attr(records.STUDY_CONFIG, json.dumps(old))
    _check_same_study(study, config, "memory")
    assert study.user_attrs[records.STUDY_FIDELITY_HASH] == config.fidelity_hash()

    changed = load_study_text(TINY_GRID, "study.yaml", ("train.lr=0.123",))
    with pytest.raises(StudyError, match="train.lr"):
        _check_same_study(study, changed, "memory")

    # On Pathfinder, a record from before data.clearance and data.joints is the first
    # generator (clearance 0, forward joints); one from between them had forward joints.
    pathfinder = load_study_text(TINY_GRID, "study.yaml", ("data.dataset=pathfinder",
                                                            "data.resolution=64"))
    first = pathfinder.fidelity()
    del first["data"]["clearance"], first["data"]["joints"]
    study = optuna.create_study()
    study.set_user_attr(records.STUDY_FIDELITY_HASH, "written-by-an-older-mvlab")
    study.set_user_attr(records.STUDY_CONFIG, json.dumps(first))
    with pytest.raises(StudyError,
                       match=r"data.clearance: 0.0 -> 2.0; data.joints: 'forward' -> 'centred'"):
        _check_same_study(study, pathfinder, "memory")
    _check_same_study(study, load_study_text(TINY_GRID, "study.yaml", (
        "data.dataset=pathfinder", "data.resolution=64", "data.clearance=0",
        "data.joints=forward")), "memory")
    clean = pathfinder.fidelity()
    del clean["data"]["joints"]
    study = optuna.create_study()
    study.set_user_attr(records.STUDY_FIDELITY_HASH, "written-by-an-older-mvlab")
    study.set_user_attr(records.STUDY_CONFIG, json.dumps(clean))
    with pytest.raises(StudyError, match=r"\(data.joints: 'forward' -> 'centred'\)"):
        _check_same_study(study, pathfinder, "memory")
    _check_same_study(study, load_study_text(TINY_GRID, "study.yaml", (
        "data.dataset=pathfinder", "data.resolution=64", "data.joints=forward")), "memory")


def test_no_heldout_split_is_fine_when_nothing_needs_it():
    config = load_study_text(BASE, "study.yaml", ("data.heldout_fraction=0",
                                                  "objectives={val_top1: maximize}",
                                                  "early_stop=false"))
    assert config.data.heldout_fraction == 0
    message = _error(BASE, ("data.heldout_fraction=0", "objectives={val_top1: maximize}",
                            "early_stop={after_epoch: 1}", "train.epochs=2"))
    assert "early_stop (it compares held-out top-1) needs one" in message


def test_the_noise_model_is_read_and_reaches_the_plan():
    from mvlab.study.plan import sequential_lines

    path = str(EXPERIMENTS / "hybrid_patterns.yaml")
    assert load_study(path, ()).analysis.noise == "paired"
    pooled = load_study(path, ("analysis.noise=pooled",))
    assert pooled.analysis.noise == "pooled"
    assert "one pooled noise level (analysis.noise: pooled)" in sequential_lines(pooled)[0]
    assert "its own per-seed differences" in sequential_lines(load_study(path, ()))[0]


def test_an_early_stop_without_precise_batchnorm_statistics_is_warned_about():
    from mvlab.study.plan import early_stop_warnings

    assert early_stop_warnings(load_study_text(TINY_GRID)) == []  # grids: no early stop
    stopped = load_study_text(TINY_GRID, "study.yaml", ("early_stop={after_epoch: 1}",))
    (line,) = early_stop_warnings(stopped)
    assert "after epoch 1" in line and "train.precise_bn: 1024" in line
    precise = load_study_text(TINY_GRID, "study.yaml",
                              ("early_stop={after_epoch: 1}", "train.precise_bn=1024"))
    assert precise.train.precise_bn == 1024 and early_stop_warnings(precise) == []


def test_the_committed_decisive_run_resumes_only_at_its_own_learning_rate(tmp_path,
                                                                         import_script):
    # results/hybrid_patterns/optuna.journal trained at peak lr 2e-3 on the first Pathfinder
    # generator (clearance 0, forward joints), the shipped files' setting until the GPU gate at
    # 1e-3 (results/calibration/gate_lr1e3_gpu): with today's file it is refused with a line
    # naming the changes, with --set train.lr=2e-3 data.clearance=0 data.joints=forward (its
    # RUN.md) it resumes
    # under the overrides scripts/gpu_studies.py sets; a train key added since (precise_bn) must
    # not make it "started with other settings".
    import shutil

    from mvlab.study.preparation import _check_same_study
    from mvlab.study.storage import open_storage

    journal = tmp_path / "optuna.journal"
    shutil.copy(EXPERIMENTS.parent / "results" / "hybrid_patterns" / "optuna.journal", journal)
    study = optuna.load_study(study_name="hybrid_patterns", storage=open_storage(str(journal)))
    gpu_studies = import_script("scripts/gpu_studies.py")
    on_the_gpu = tuple(gpu_studies.GPU_SETTINGS)
    shipped = str(EXPERIMENTS / "hybrid_patterns.yaml")
    with pytest.raises(StudyError, match=r"data.clearance: 0.0 -> 2.0.*train.lr: 0.002 -> 0.001"):
        _check_same_study(study, load_study(shipped, on_the_gpu), str(journal))
    as_run = (*on_the_gpu, "train.lr=2e-3", "data.clearance=0", "data.joints=forward")
    _check_same_study(study, load_study(shipped, as_run), str(journal))
    with pytest.raises(StudyError, match="train.precise_bn: 0 -> 1024"):
        _check_same_study(study, load_study(shipped, (*as_run, "train.precise_bn=1024")),
                          str(journal))

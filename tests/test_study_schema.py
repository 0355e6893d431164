"""Study files: validation with file/line/key errors, overrides, search-space expansion, the
early-stop rule and stale-trial detection. No training here (see test_sweep_e2e.py)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from mvlab.errors import StudyError
from mvlab.study import grid_points, load_study, load_study_text, population_points
from mvlab.study.schema import EarlyStop
from mvlab.study.space import point_key, resolve_point
from mvlab.study.storage import HOST_ATTR, PID_ATTR, START_ATTR, owner_attrs, stale_reason
from mvlab.study.trial import EARLY_TOP1, hopeless

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

BASE = """\
name: t
model: tiny
data:
  resolution: 16
  per_class: 10
train:
  epochs: 2
  batch_size: 8
study:
  kind: grid
  seeds: [0, 1]
space:
  pattern: [last_half, attn_only]
  branch: [on, off]
"""


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


@pytest.mark.parametrize("name", ["hybrid_patterns", "mixer_ablation", "design_space"])
def test_shipped_experiments_validate(name):
    config = load_study(EXPERIMENTS / f"{name}.yaml")
    assert config.name == name
    if name == "hybrid_patterns":
        assert config.kind == "grid" and len(grid_points(config)) == 28


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
    assert message.startswith("study.yaml:4: data.resolution:")


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
    assert message.startswith("--set train.epochs: train.epochs:")
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
    assert err.startswith("mvlab sweep: error: --set train.lr: train.lr:") and "must be >= 0" in err

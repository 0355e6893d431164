"""The sweep paths the grid end-to-end tests do not take, each run for real through the public
command (``mvlab sweep`` / ``mvlab report`` via ``mvlab.cli.main``) and read back through the
public reader (``mvlab.analysis.load_study``): an optimize study with TPE and with NSGA-II, a
population in a params band, constraint pruning, the early stop inside a sweep,
``--retry-failed``, the report of a finished tiny grid, and every shipped study through
``--check``. Tiny model at 16 px, a few dozen built-in images, one thread: a trial takes a
second or two; the MLflow database is shared by the module (its schema costs ~10 s)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from mvlab.analysis import load_study
from mvlab.cli import main

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
VERDICTS = {"better", "worse", "equivalent", "undetermined"}

HEAD = """\
name: {name}
model: tiny
data: {{dataset: builtin, resolution: 16, per_class: 12, val_per_class: 5,
        heldout_fraction: 0.25}}
train: {{epochs: {epochs}, batch_size: 32, warmup_epochs: 0, device: cpu, threads: 1}}
bench: {{batch_size: 4, warmup: 1, steps: 2, repeats: 1}}
tracking: {{uri: "{tracking}"}}
workdir: {workdir}
"""


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _write(folder: Path, name: str, body: str, tracking: str, epochs: int = 1) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(HEAD.format(name=name, epochs=epochs, tracking=tracking,
                                workdir=folder / "studies" / name) + body)
    return path


def _sweep(path: Path, *args: str) -> None:
    code = main(["sweep", str(path), "--no-progress", *args])
    assert code == 0, f"mvlab sweep {path.name} {' '.join(args)} exited {code}"


def _trials(path: Path) -> pd.DataFrame:
    """The study's trials, Optuna record joined with the MLflow metrics (``metrics.*``)."""
    name = path.stem
    return load_study(name, path.parent / "studies" / name / "optuna.journal")


def _params_of(pattern: str, **options) -> int:
    """Parameters of the tiny model with ``pattern`` (10 classes, as the built-in data), counted
    on the built network, not by the code the sweep uses."""
    import mvlab
    from mvlab.grammar import format_spec, parse_spec, set_option

    spec = set_option(parse_spec("tiny"), "pattern", pattern)
    for key, value in options.items():
        spec = set_option(spec, key, str(value))
    model = mvlab.build_model(format_spec(spec), num_classes=10)
    return sum(p.numel() for p in model.parameters())


def _front(points: dict[int, tuple[float, ...]]) -> set[int]:
    """Trials no other trial dominates (every objective maximised)."""
    def dominates(a, b):
        return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))
    return {n for n, v in points.items() if not any(dominates(w, v) for w in points.values())}


# ------------------------------------------------------------------------------------ optimize
@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_an_optimize_study_proposes_trains_and_reports_its_front(tmp_path, monkeypatch, capsys,
                                                                 tracking_uri, sampler):
    monkeypatch.chdir(tmp_path)
    population = "population_size: 2, " if sampler == "nsga2" else ""
    path = _write(tmp_path, f"opt_{sampler}", f"""\
study: {{kind: optimize, sampler: {sampler}, {population}n_trials: 3, seeds: [0]}}
space:
  pattern: [last_half, attn_only, mamba_only]
  train.lr: {{float: [5.0e-4, 5.0e-3], log: true}}
early_stop: false
""", tracking_uri)
    _sweep(path)
    out = capsys.readouterr().out
    trials = _trials(path)
    assert len(trials) == 3 and set(trials["state"]) == {"COMPLETE"}, trials[["trial", "state"]]
    assert set(trials["params.pattern"]) <= {"last_half", "attn_only", "mamba_only"}
    assert trials["params.train.lr"].between(5.0e-4, 5.0e-3).all()
    for _, trial in trials.iterrows():  # the proposed point is the network that was built
        assert f"pattern={trial['params.pattern']}" in trial["spec"]
        assert trial["params"] == _params_of(trial["params.pattern"])
        assert 0 <= trial["heldout_top1"] <= 100 and math.isfinite(trial["throughput"])
        assert trial["metrics.epochs_completed"] == 1
    values = {int(t.trial): (t.heldout_top1, t.throughput) for t in trials.itertuples()}
    front = _front(values)
    assert f"Pareto front ({len(front)} trials):" in out
    assert {int(line.split(":")[0].strip(" #")) for line in out.splitlines()
            if line.startswith("  #")} == front

    # n_trials is the study's size, not a per-run count: the same command again trains nothing.
    _sweep(path)
    assert len(_trials(path)) == 3


# ---------------------------------------------------------------------------------- population
@pytest.mark.slow
def test_a_population_keeps_the_points_inside_its_band_and_trains_each(tmp_path, monkeypatch,
                                                                       tracking_uri):
    monkeypatch.chdir(tmp_path)
    # A params band that admits mamba_only at every d_state drawn here and never attn_only.
    mamba = [_params_of("mamba_only", d_state=d) for d in (2, 6)]
    attn = _params_of("attn_only")
    assert max(mamba) < attn
    low, high = min(mamba) - 1, (max(mamba) + attn) // 2
    path = _write(tmp_path, "pop", f"""\
study: {{kind: population, n: 3, seeds: [0], band: {{params: [{low}, {high}]}}}}
space:
  pattern: [mamba_only, attn_only]
  s3.d_state: {{int: [2, 6]}}
""", tracking_uri)
    _sweep(path)
    trials = _trials(path)
    assert set(trials["state"]) == {"COMPLETE"}
    # n points inside the band, each trained once: the attn_only draws (outside) were dropped
    assert len(trials) == 3 and trials["params.s3.d_state"].nunique() == 3
    assert set(trials["params.pattern"]) == {"mamba_only"}
    assert trials["params"].between(low, high).all()
    assert trials["params.s3.d_state"].between(2, 6).all()
    for _, trial in trials.iterrows():
        assert f"d_state={int(trial['params.s3.d_state'])} " in trial["spec"].split(" | ")[3] + " "
        assert trial["params"] == _params_of("mamba_only", **{"s3.d_state":
                                                               int(trial["params.s3.d_state"])})


# ------------------------------------------------------------------------------ early stop
@pytest.mark.slow
def test_the_early_stop_prunes_a_dominated_trial_after_its_first_epoch(tmp_path, monkeypatch,
                                                                      tracking_uri):
    """Two proposals of one network and seed train identically (one thread): at epoch 1 the
    second is exactly as accurate as the first, which is as good in params, so with margin 0
    the rule stops it there; the first, with no finished trial before it, trains both epochs."""
    monkeypatch.chdir(tmp_path)
    body = """\
study: {kind: optimize, sampler: nsga2, population_size: 2, n_trials: 2, seeds: [0]}
space:
  pattern: [attn_only]
objectives: {heldout_top1: maximize, params: minimize}
early_stop: {after_epoch: 1, margin: 0}
"""
    path = _write(tmp_path, "early", body, tracking_uri, epochs=2)
    _sweep(path)
    trials = _trials(path).set_index("trial")
    assert list(trials["state"]) == ["COMPLETE", "PRUNED"]
    first, second = trials.loc[0], trials.loc[1]
    assert first["metrics.epochs_completed"] == 2
    assert second["metrics.epochs_completed"] == 1  # stopped inside the sweep, not after it
    assert second["early_heldout_top1"] <= first["early_heldout_top1"]
    assert second["reason"].startswith("pruned after epoch 1: trial 0 ")

    # The control: the same study without the early stop trains the second trial to the end.
    control = _write(tmp_path, "late", body.replace("early_stop: {after_epoch: 1, margin: 0}",
                                                    "early_stop: false"), tracking_uri, epochs=2)
    _sweep(control)
    late = _trials(control)
    assert list(late["state"]) == ["COMPLETE", "COMPLETE"]
    assert list(late["metrics.epochs_completed"]) == [2, 2]


# ------------------------------------------------------------------------------ --retry-failed
@pytest.mark.slow
def test_retry_failed_queues_a_failed_point_again_and_nothing_else(tmp_path, monkeypatch,
                                                                   tracking_uri):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, "retry", """\
study: {kind: grid, seeds: [0]}
space:
  pattern: [attn_only]
  train.lr: [1.0e-3, 1.0e+9]
""", tracking_uri)
    _sweep(path)
    first = _trials(path)
    by_lr = first.set_index("params.train.lr")
    assert by_lr.loc[1e9, "state"] == "FAIL" and "nan" in by_lr.loc[1e9, "reason"]
    assert by_lr.loc[1e-3, "state"] == "COMPLETE"

    _sweep(path)  # without the flag a failed point stays failed
    assert len(_trials(path)) == 2

    _sweep(path, "--retry-failed")
    after = _trials(path)
    assert len(after) == 3
    retried = after[after["trial"] == 2].iloc[0]
    assert retried["params.train.lr"] == 1e9 and retried["state"] == "FAIL"
    # the finished point was not trained again
    assert list(after.loc[after["params.train.lr"] == 1e-3, "trial"]) == \
        list(first.loc[first["params.train.lr"] == 1e-3, "trial"])


# ----------------------------------------------------- constraints and the report, one grid
@pytest.fixture(scope="module")
def finished_grid(tmp_path_factory, tracking_uri) -> dict:
    """A finished tiny grid (3 patterns x 2 seeds) whose ``max_params`` lies between last_half
    and attn_only, so attn_only's points are pruned, and its report."""
    folder = tmp_path_factory.mktemp("grid")
    limit = (_params_of("last_half") + _params_of("attn_only")) // 2
    assert _params_of("mamba_only") < _params_of("last_half") < limit < _params_of("attn_only")
    path = _write(folder, "grid", f"""\
study: {{kind: grid, seeds: [0, 1]}}
space:
  pattern: [mamba_only, last_half, attn_only]
constraints: {{max_params: {limit}}}
analysis: {{reference: {{pattern: last_half}}, equivalence_margin: 0.5}}
""", tracking_uri)
    _sweep(path)
    out = folder / "report"
    assert main(["report", str(path), "--out", str(out)]) == 0
    return {"path": path, "limit": limit, "trials": _trials(path), "out": out}


@pytest.mark.slow
def test_a_constraint_prunes_the_points_above_it_before_they_are_measured(finished_grid):
    trials, limit = finished_grid["trials"], finished_grid["limit"]
    assert len(trials) == 6
    over = trials["params"] > limit
    assert set(trials.loc[over, "params.pattern"]) == {"attn_only"}  # what the limit was set for
    assert set(trials.loc[over, "state"]) == {"PRUNED"}
    assert set(trials.loc[~over, "state"]) == {"COMPLETE"}
    for _, trial in trials[over].iterrows():
        assert trial["reason"].startswith("infeasible: params ") and "> max_params" in \
            trial["reason"]
        # pruned before the benchmark and before training
        assert pd.isna(trial["throughput"]) and pd.isna(trial["metrics.throughput"])
        assert pd.isna(trial["metrics.heldout_top1"])


@pytest.mark.slow
def test_the_report_of_a_finished_sweep_holds_its_verdict_table(finished_grid):
    out, trials = finished_grid["out"], finished_grid["trials"]
    for name in ("README.md", "trials.csv", "configurations.csv", "verdicts.csv", "verdicts.png",
                 "pareto.csv", "pareto.png", "choices_pattern.csv", "edf.png", "failed.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    # One verdict, mamba_only against last_half (attn_only was pruned: nothing to compare).
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert list(verdicts["configuration"]) == ["mamba_only"]
    row = verdicts.iloc[0]
    assert row["verdict"] in VERDICTS and row["seeds"] == 2
    top1 = trials[trials["state"] == "COMPLETE"].pivot(index="seed", columns="params.pattern",
                                                        values="heldout_top1")
    assert row["diff"] == pytest.approx((top1["mamba_only"] - top1["last_half"]).mean())
    _consistent(row)

    # The README's table says the same.
    readme = (out / "README.md").read_text()
    assert "Against the reference: last_half" in readme
    assert "| configuration | verdict | seeds | diff |" in readme
    assert f"| mamba_only | {row['verdict']} | 2 | " in readme
    # The pruned points are listed with their reason, in failed.csv and the README.
    failed = pd.read_csv(out / "failed.csv")
    pruned = set(trials.loc[trials["state"] == "PRUNED", "trial"])
    assert set(failed["trial"]) == pruned and len(pruned) == 2
    assert failed["reason"].str.startswith("infeasible: params").all()
    assert "## Failed and pruned trials" in readme


@pytest.mark.slow
def test_the_report_follows_the_trials_it_is_given(finished_grid, tmp_path):
    """Rebuilt with ``--trials`` from its own trials.csv with mamba_only 60 points better on
    every seed, the report's difference moves by exactly 60 (and a sign slip shows)."""
    trials = pd.read_csv(finished_grid["out"] / "trials.csv")
    before = pd.read_csv(finished_grid["out"] / "verdicts.csv").iloc[0]
    shifted = trials["params.pattern"] == "mamba_only"
    trials.loc[shifted, "heldout_top1"] += 60.0
    trials.to_csv(tmp_path / "trials.csv", index=False)
    out = tmp_path / "report"
    assert main(["report", str(finished_grid["path"]), "--trials", str(tmp_path / "trials.csv"),
                 "--out", str(out)]) == 0
    after = pd.read_csv(out / "verdicts.csv").iloc[0]
    assert after["configuration"] == "mamba_only"
    assert after["diff"] == pytest.approx(before["diff"] + 60.0)
    assert after["sd"] == pytest.approx(before["sd"])  # a shift changes no paired spread
    _consistent(after)


def _consistent(row: pd.Series, margin: float = 0.5) -> None:
    """A verdict row agrees with its own interval (docs/studies.md, "Statistics")."""
    assert row["verdict"] in VERDICTS
    assert row["ci_low"] <= row["diff"] <= row["ci_high"]
    if row["verdict"] == "better":
        assert row["ci_low"] > 0
    elif row["verdict"] == "worse":
        assert row["ci_high"] < 0
    elif row["verdict"] == "equivalent":
        assert -margin <= row["ci_low"] and row["ci_high"] <= margin
    elif row["ci_low"] > 0 or row["ci_high"] < 0:  # undetermined: no difference shown
        assert row["p_diff_holm"] >= 0.05


# ------------------------------------------------------------------------- shipped studies
@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_study_passes_check(path, capsys):
    assert main(["sweep", str(path), "--check"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # no error, no few-token warning
    assert captured.out.startswith(f"study {path.stem}: ")


def test_the_fidelity_study_is_among_them_and_plans_both_budgets(capsys):
    path = EXPERIMENTS / "proxy_fidelity.yaml"
    assert path in sorted(EXPERIMENTS.glob("*.yaml"))
    assert main(["sweep", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("study proxy_fidelity: grid")
    assert "train.epochs: 2 choices" in out  # the fidelity is a grid dimension: 1 and 4
    assert "train.epochs=1 " in out and "train.epochs=4 " in out

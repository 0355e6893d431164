"""End-to-end sweeps with the real grammar, models, data, trainer and benchmark (tiny model,
1 epoch, a few hundred built-in images): Optuna trials, MLflow parent/child runs and artifacts,
the Pareto set, resume after a simulated kill, N workers, failed trials, the report."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState

from mvlab.study import SweepOptions, build_report, load_study_text, run_sweep
from mvlab.study.locations import storage_url_for
from mvlab.study.preparation import open_study
from mvlab.study.space import point_key, suggest_point
from mvlab.study.storage import PID_ATTR, START_ATTR, claim_waiting_trial, owner_attrs

pytestmark = pytest.mark.slow

TINY = """\
name: {name}
model: tiny
data: {{dataset: builtin, resolution: 16, per_class: 12, val_per_class: 5,
        heldout_fraction: 0.25}}
train: {{epochs: 1, batch_size: 32, warmup_epochs: 0, device: cpu}}
study: {{kind: grid, seeds: [0]}}
space:
{space}
bench: {{batch_size: 4, warmup: 1, steps: 2, repeats: 1}}
tracking: {{uri: "{tracking}"}}
"""


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow database for the module: creating its schema costs ~10 s on a busy CPU."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _config(tmp_path: Path, name: str, space: str, tracking: str, overrides=()):
    text = TINY.format(name=name, space=space, tracking=tracking)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return load_study_text(text, str(path), list(overrides))


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True))


def test_sweep_records_resumes_after_a_kill_and_reports(tmp_path, monkeypatch, tracking_uri):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, "tiny_grid", "  pattern: [last_half, attn_only, mamba_only]",
                     tracking_uri)

    # 1. A first invocation runs one trial; the other two points stay queued.
    first = run_sweep(config, SweepOptions(n_trials=1, progress=False))
    assert first.counts["COMPLETE"] == 1 and first.counts["WAITING"] == 2

    # 2. A worker "killed" mid-trial: it claimed a point and left it RUNNING.
    study = open_study(config, storage_url_for(config))
    victim = claim_waiting_trial(study)
    victim_point = suggest_point(victim, config)
    for key, value in {**owner_attrs(), PID_ATTR: _dead_pid(), START_ATTR: None}.items():
        victim.set_user_attr(key, value)
    done_before = {t.number: (t.values, t.datetime_complete)
                   for t in study.get_trials(states=(TrialState.COMPLETE,))}

    # 3. Rerunning the same command resumes: stale trial failed and re-queued, nothing redone.
    second = run_sweep(config, SweepOptions(progress=False))
    study = open_study(config, storage_url_for(config))
    trials = study.get_trials()
    stale = study.get_trials(states=(TrialState.FAIL,))
    assert [t.number for t in stale] == [victim.number]
    assert "stale" in stale[0].user_attrs["reason"] and stale[0].user_attrs["requeue"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3 and len(trials) == 4
    keys = [point_key(t.params) for t in complete]
    assert len(set(keys)) == 3 and point_key(victim_point) in keys
    for number, (values, finished) in done_before.items():
        assert (trials[number].values, trials[number].datetime_complete) == (values, finished)
    assert second.counts["COMPLETE"] == 3

    # Both objectives, finite and in range, named for the analysis.
    assert study.metric_names == ["heldout_top1", "throughput"]
    for trial in complete:
        top1, throughput = trial.values
        assert 0.0 <= top1 <= 100.0 and throughput > 0 and math.isfinite(throughput)
        assert trial.user_attrs["throughput"] == throughput
        assert trial.user_attrs["params"] > 0 and trial.user_attrs["macs"] > 0
        assert f"pattern={trial.params['pattern']}" in trial.user_attrs["spec"]

    # MLflow: one experiment, a parent per invocation, a child per trial, joined both ways.
    client = MlflowClient(tracking_uri=second.tracking_uri)
    experiment = client.get_experiment_by_name("tiny_grid")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = {r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert parents == {first.parent_run_id, second.parent_run_id}
    assert all(r.info.status == "FINISHED" for r in runs if r.info.run_id in parents)
    children = {r.info.run_id: r for r in runs if r.info.run_id not in parents}
    assert len(children) == 3
    for trial in complete:
        run = children[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["trial_number"] == str(trial.number)
        assert run.data.tags["mlflow.parentRunId"] in parents
        assert run.info.status == "FINISHED"
        assert run.data.params["spec"] == trial.user_attrs["spec"]
        assert run.data.params["pattern"] == trial.params["pattern"]
        assert run.data.metrics["heldout_top1"] == pytest.approx(trial.values[0])
        assert run.data.metrics["throughput"] == pytest.approx(trial.values[1])
        # one thread by default on a CPU, so the objective is that thread's CPU time
        assert (run.data.params["bench.clock_used"], run.data.params["bench.device_used"],
                run.data.params["bench.threads_used"]) == ("thread_cpu", "cpu", "1")
        assert len(client.get_metric_history(run.info.run_id, "heldout_top1")) >= 1
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"data_manifest.json", "throughput.json"} <= artifacts

    # The parent run's Pareto table: non-dominated and complete.
    parent_files = {a.path for a in client.list_artifacts(second.parent_run_id)}
    assert {"pareto.csv", "pareto.png", "trials.csv"} <= parent_files
    pareto = pd.read_csv(client.download_artifacts(second.parent_run_id, "pareto.csv",
                                                   str(tmp_path)))
    front = set(pareto["trial"])
    assert front == {t.number for t in study.best_trials}
    values = {t.number: t.values for t in complete}
    for a in front:
        assert not any(_dominates(values[b], values[a]) for b in values)
    for other in set(values) - front:
        assert any(_dominates(values[a], values[other]) for a in front)

    # mvlab report rebuilds the tables from storage alone.
    out = tmp_path / "results" / "tiny_grid"
    written = {p.name for p in build_report("tiny_grid", storage_url_for(config), out)}
    assert {"pareto.csv", "pareto.png", "choices_pattern.csv", "edf.png", "failed.csv",
            "README.md"} <= written
    failed = pd.read_csv(out / "failed.csv")
    assert list(failed["trial"]) == [victim.number] and "stale" in failed["reason"][0]
    assert set(pd.read_csv(out / "pareto.csv")["trial"]) == front


def test_workers_share_a_study_and_a_failed_trial_loses_nothing(tmp_path, monkeypatch,
                                                                 tracking_uri):
    monkeypatch.chdir(tmp_path)
    url = os.environ.get("MVLAB_TEST_POSTGRES_URL") or None
    name = f"tiny_workers_{os.getpid()}"
    config = _config(tmp_path, name, "  pattern: [attn_only]\n  train.lr: [2.0e-3, 1.0e+9, 1.0e-3]",
                     tracking_uri)
    summary = run_sweep(config, SweepOptions(workers=2, storage=url, progress=False))
    study = open_study(config, storage_url_for(config, url))
    trials = study.get_trials()
    assert len(trials) == 3  # no duplicates, no stray extra trials from the two workers
    by_lr = {t.params["train.lr"]: t for t in trials}
    assert set(by_lr) == {2e-3, 1e9, 1e-3}
    assert by_lr[1e9].state == TrialState.FAIL and "nan" in by_lr[1e9].user_attrs["reason"]
    assert by_lr[2e-3].state == by_lr[1e-3].state == TrialState.COMPLETE
    assert all(t.user_attrs["pid"] != os.getpid() for t in trials)  # ran in the workers
    from mlflow import MlflowClient

    run = MlflowClient(summary.tracking_uri).get_run(by_lr[1e9].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "nan" in run.data.tags["fail_reason"]

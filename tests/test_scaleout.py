"""Scale-out under faults, with real processes: three sweeps on one PostgreSQL study (one of
them SIGKILLed mid-trial), three ``--workers`` on one journal file (one worker SIGKILLed),
Ctrl-C, and the heartbeat rules that find a dead worker's trial. Each study is a tiny grid
(tiny model, 1 epoch, 16 px, ~200 built-in images); reruns happen in-process to save imports.

PostgreSQL comes from scripts/test.sh (``MVLAB_TEST_POSTGRES_URL``); without it those tests skip.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from mvlab.study import SweepOptions, load_study, run_sweep, tracking
from mvlab.study import storage as st
from mvlab.study.locations import storage_url_for
from mvlab.study.preparation import open_study
from mvlab.study.space import grid_points, point_key

pytestmark = pytest.mark.slow

POSTGRES_URL = os.environ.get("MVLAB_TEST_POSTGRES_URL", "")
DATA = dict(dataset="builtin", resolution=16, per_class=20, val_per_class=5,
            heldout_fraction=0.25)
STUDY = """\
name: {name}
model: tiny
data: {{dataset: builtin, resolution: 16, per_class: 20, val_per_class: 5,
        heldout_fraction: 0.25}}
train: {{epochs: 2, batch_size: 32, warmup_epochs: 0, device: cpu, threads: 1}}
study: {{kind: grid, seeds: [0], stale_after_s: 600}}
space:
  pattern: [last_half, attn_only, mamba_only]
  train.lr: [1.0e-3, 2.0e-3]
bench: {{batch_size: 4, warmup: 1, steps: 2, repeats: 1}}
tracking: {{uri: "{tracking}"}}
workdir: "{workdir}"
"""


@pytest.fixture(scope="session")
def sweep_env(tmp_path_factory) -> dict[str, str]:
    """One MVLAB_CACHE for every process of these tests, warmed once (built-in data decoded,
    scan kernels compiled), and one MLflow database, so workers only pay for their trials."""
    from mvlab.data import DataConfig, build_data
    from mvlab.ops.scan import cpu_c

    root = tmp_path_factory.mktemp("scaleout")
    kernels = cpu_c.cache_dir()
    cpu_c.is_available()  # compiled (or found) in the usual kernel cache, shared with the suite
    cache = root / "cache"
    cache.mkdir()
    (cache / "kernels").symlink_to(kernels, target_is_directory=True)
    previous = os.environ.get("MVLAB_CACHE")
    os.environ["MVLAB_CACHE"] = str(cache)
    build_data(DataConfig(**DATA), batch_size=32, progress=False)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    tracking.prepare_tracking(tracking_uri, "warm-up", None)  # the schema, created once
    env = {**os.environ, "MVLAB_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "MVLAB_TRACKING": tracking_uri, "MVLAB_ROOT": str(root)}
    yield env
    if previous is None:
        os.environ.pop("MVLAB_CACHE", None)
    else:
        os.environ["MVLAB_CACHE"] = previous


def _study_file(env: dict[str, str], tag: str, fresh_tracking: bool = False
                ) -> tuple[Path, str]:
    """A study file; ``fresh_tracking``: its own MLflow database, not created yet."""
    name = f"scaleout_{tag}_{uuid.uuid4().hex[:8]}"
    root = Path(env["MVLAB_ROOT"])
    tracking_uri = f"sqlite:///{root / name}-mlflow.db" if fresh_tracking else env["MVLAB_TRACKING"]
    path = root / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, tracking=tracking_uri, workdir=root / name))
    return path, name


def _sweep(env: dict[str, str], path: Path, *args: str) -> subprocess.Popen:
    """``mvlab sweep`` in a child process; its stderr goes to a file (``_stderr``), since a
    pipe nobody drains can fill up and stall it."""
    log = path.with_name(f"{path.stem}-{uuid.uuid4().hex[:6]}.stderr")
    with open(log, "w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "mvlab.cli", "sweep", str(path),
                                 "--no-progress", *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=handle, text=True)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _stderr(proc: subprocess.Popen) -> str:
    return proc.log.read_text()  # type: ignore[attr-defined]


def _wait_for(condition, what: str, procs: list[subprocess.Popen], timeout: float = 240):
    """Poll ``condition()`` until it returns something truthy; fail early if a sweep died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        for proc in procs:
            if proc.poll() is not None and proc.returncode != 0:
                raise AssertionError(f"a sweep exited {proc.returncode} while waiting for "
                                     f"{what}: {_stderr(proc)[-2000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _opened(config, url: str):
    """The study once some sweep has created it, else None."""
    if "://" not in url and not Path(url).exists():
        return None
    try:
        return open_study(config, url, create=False)
    except KeyError:
        return None


def _running_trial_of(study: optuna.Study, pid: int, training: bool = False):
    """A RUNNING trial owned by process ``pid`` (with ``training``: past its benchmark)."""
    for trial in study.get_trials(deepcopy=True, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(st.PID_ATTR) == pid and (
                not training or "throughput" in trial.user_attrs):
            return trial
    return None


def _check_complete(config, url: str, stale_numbers: set[int], stale_word: str) -> None:
    """Every planned point ended COMPLETE exactly once with both objectives; the only other
    trials are the expected stale/interrupted failures; MLflow child runs match the trials one
    to one and none is left RUNNING."""
    from mlflow import MlflowClient

    study = open_study(config, url, create=False)
    trials = study.get_trials()
    planned = Counter(point_key(p) for p in grid_points(config))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert Counter(point_key(t.params) for t in complete) == planned
    failed = {t.number: t for t in trials if t.state == TrialState.FAIL}
    assert set(failed) == stale_numbers
    for trial in failed.values():
        assert stale_word in trial.user_attrs["reason"] and trial.user_attrs["requeue"]
    assert len(trials) == len(planned) + len(stale_numbers)  # nothing lost, nothing extra
    for trial in complete:
        top1, throughput = trial.values
        assert 0 <= top1 <= 100 and throughput > 0

    client = MlflowClient(tracking_uri=config.tracking_uri)
    experiment = client.get_experiment_by_name(config.name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    children = {r.info.run_id: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert sorted(children) == sorted(t.user_attrs["mlflow_run_id"] for t in trials)
    for trial in trials:
        run = children[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["trial_number"] == str(trial.number)
        if trial.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED"
            assert run.data.metrics["heldout_top1"] == pytest.approx(trial.values[0])
        else:
            assert run.info.status in ("FAILED", "KILLED")
            assert stale_word in run.data.tags["fail_reason"]


def _first_trial_in_training(study: optuna.Study):
    for trial in study.get_trials(deepcopy=True, states=(TrialState.RUNNING,)):
        if "throughput" in trial.user_attrs:
            return trial
    return None


def _kill_one_and_finish(config, url: str, procs: list[subprocess.Popen]
                         ) -> tuple[int, int]:
    """SIGKILL the process that runs the first trial, once that trial trains; the others
    finish the study and fail the orphaned trial themselves. Returns (trial number, pid)."""
    study = _wait_for(lambda: _opened(config, url), "the study", procs)
    trial = _wait_for(lambda: _first_trial_in_training(study), "a trial in training", procs)
    victim = trial.user_attrs[st.PID_ATTR]
    os.kill(victim, signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=300)
    errors = [_stderr(p)[-2000:] for p in procs if p.returncode not in (0, -signal.SIGKILL)]
    assert not errors, errors
    # The trial seen training is the one killed (unless it finished in the instant between
    # seeing it and the kill; then the victim's next trial is): the survivors failed it.
    dead = [t for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(st.PID_ATTR) == victim and t.state != TrialState.COMPLETE]
    assert [t.state for t in dead] == [TrialState.FAIL], "the survivors did not fail the dead trial"
    assert "is gone" in dead[0].user_attrs["reason"]
    return dead[0].number, victim


@pytest.mark.skipif(not POSTGRES_URL, reason="no PostgreSQL server: run `make test` "
                                             "(scripts/test.sh starts one)")
def test_three_sweeps_share_a_postgres_study_and_survive_a_kill(sweep_env):
    # Three sweeps start at once on an empty MLflow database: the first to take the prepare
    # lock creates its schema and the experiment, the others wait and reuse them.
    path, _ = _study_file(sweep_env, "pg", fresh_tracking=True)
    config = load_study(path)
    procs = [_sweep(sweep_env, path, "--storage", POSTGRES_URL) for _ in range(3)]
    killed, victim = _kill_one_and_finish(config, POSTGRES_URL, procs)
    assert sorted(p.returncode for p in procs) == [-signal.SIGKILL, 0, 0]
    assert [p.pid for p in procs if p.returncode != 0] == [victim]

    summary = run_sweep(config, SweepOptions(storage=POSTGRES_URL, progress=False))
    _check_complete(config, POSTGRES_URL, {killed}, "stale")
    assert summary.counts["COMPLETE"] == 6 and summary.counts["WAITING"] == 0


def test_journal_workers_survive_a_killed_worker(sweep_env):
    path, _ = _study_file(sweep_env, "journal")
    config = load_study(path)
    url = storage_url_for(config)
    main = _sweep(sweep_env, path, "--workers", "3")
    killed, victim = _kill_one_and_finish(config, url, [main])
    assert main.returncode == 0 and victim != main.pid
    assert "died (killed by signal 9)" in _stderr(main)

    summary = run_sweep(config, SweepOptions(progress=False))
    assert summary.counts["COMPLETE"] == 6
    _check_complete(config, url, {killed}, "stale")


def test_ctrl_c_records_the_trial_closes_runs_and_the_same_command_resumes(sweep_env):
    from mlflow import MlflowClient

    path, name = _study_file(sweep_env, "sigint")
    overrides = ["space.train.lr=[1.0e-3]", "space.pattern=[last_half, attn_only]",
                 "train.epochs=4"]  # a long enough training to interrupt
    config = load_study(path, overrides)
    url = storage_url_for(config)
    sweep = _sweep(sweep_env, path, "--set", *overrides)
    study = _wait_for(lambda: _opened(config, url), "the study", [sweep])
    trial = _wait_for(lambda: _running_trial_of(study, sweep.pid, training=True),
                      "a trial in training", [sweep])
    sweep.send_signal(signal.SIGINT)
    sweep.wait(timeout=120)
    err = _stderr(sweep)
    assert sweep.returncode == 130, err[-2000:]
    lines = err.strip().splitlines()
    assert lines[-1].startswith("mvlab sweep: interrupted:") and "same command" in lines[-1]
    assert "Traceback" not in err

    interrupted = study.get_trials(deepcopy=False)[trial.number]
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["reason"] == "interrupted by the user"
    client = MlflowClient(tracking_uri=config.tracking_uri)
    run = client.get_run(interrupted.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert client.get_run(run.data.tags["mlflow.parentRunId"]).info.status == "KILLED"

    resumed = run_sweep(config, SweepOptions(progress=False))
    assert resumed.counts["COMPLETE"] == 2 and name == resumed.study
    _check_complete(config, url, {trial.number}, "interrupted")


def test_sigterm_stops_every_worker_records_their_trials_and_the_same_command_resumes(
        sweep_env):
    # `kill <sweep>` (a scheduler's stop) used to end only the main process: its workers went
    # on training as orphans and their trials stayed RUNNING. Now SIGTERM is a Ctrl-C.
    path, _ = _study_file(sweep_env, "sigterm")
    overrides = ["space.train.lr=[1.0e-3]", "space.pattern=[last_half, attn_only]",
                 "train.epochs=60"]  # long enough for both workers to be training at once
    config = load_study(path, overrides)
    url = storage_url_for(config)
    sweep = _sweep(sweep_env, path, "--workers", "2", "--set", *overrides)
    study = _wait_for(lambda: _opened(config, url), "the study", [sweep])

    def both_training():
        running = study.get_trials(deepcopy=True, states=(TrialState.RUNNING,))
        training = [t for t in running if "throughput" in t.user_attrs]
        return training if len(training) == 2 else None

    trials = _wait_for(both_training, "both workers' trials in training", [sweep])
    workers = {t.user_attrs[st.PID_ATTR] for t in trials}
    assert len(workers) == 2 and sweep.pid not in workers
    sweep.send_signal(signal.SIGTERM)
    sweep.wait(timeout=120)
    err = _stderr(sweep)
    assert sweep.returncode == 143 and "Traceback" not in err, err[-2000:]  # 128 + SIGTERM
    assert err.strip().splitlines()[-1].startswith("mvlab sweep: interrupted:")
    for pid in workers:  # no orphan left training
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for trial in trials:
        ended = study.get_trials(deepcopy=False)[trial.number]
        assert ended.state == TrialState.FAIL
        assert ended.user_attrs["reason"] == "interrupted by the user"

    resumed = run_sweep(config, SweepOptions(progress=False))
    assert resumed.counts["COMPLETE"] == 2
    _check_complete(config, url, {t.number for t in trials}, "interrupted")


# ------------------------------------------------------------------ detection rules, no training
def _running_trial(study: optuna.Study, attrs: dict) -> optuna.Trial:
    study.enqueue_trial({"x": 1})
    trial = st.claim_waiting_trial(study)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return trial


@pytest.mark.skipif(not POSTGRES_URL, reason="no PostgreSQL server: run `make test`")
def test_rdb_heartbeat_fails_a_silent_trial_of_another_host():
    storage = st.open_storage(POSTGRES_URL, workers=3, stale_after_s=2)
    assert storage.get_heartbeat_interval() == 1 and storage.grace_period == 2
    study = optuna.create_study(storage=storage, study_name=f"beat_{uuid.uuid4().hex[:8]}")
    remote = {st.HOST_ATTR: "elsewhere", st.PID_ATTR: 1, st.HEARTBEAT_ATTR: 0.0}
    beating, silent = _running_trial(study, remote), _running_trial(study, remote)
    with st.heartbeat(study, beating, interval=0.5):
        with st.heartbeat(study, silent, interval=0.5):
            pass  # one beat, then silence
        time.sleep(3.5)
        assert st.fail_stale_trials(study, stale_after_s=2) == [silent.number]
    failed = study.get_trials(deepcopy=False)[silent.number]
    assert "no heartbeat" in failed.user_attrs["reason"] and failed.user_attrs["requeue"]
    assert study.get_trials(deepcopy=False)[beating.number].state == TrialState.RUNNING


def test_journal_rule_uses_the_process_here_and_the_heartbeat_elsewhere(tmp_path):
    storage = st.open_storage(str(tmp_path / "s.journal"), stale_after_s=2)
    study = optuna.create_study(storage=storage)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    here_dead = _running_trial(study, {**st.owner_attrs(), st.PID_ATTR: int(dead.stdout)})
    here_alive = _running_trial(study, st.owner_attrs())
    remote = {st.HOST_ATTR: "elsewhere", st.PID_ATTR: 1}
    remote_beating, remote_silent = _running_trial(study, remote), _running_trial(study, remote)
    remote_silent.set_user_attr(st.HEARTBEAT_ATTR, time.time() - 5)
    with st.heartbeat(study, remote_beating, interval=0.5):
        time.sleep(1.0)
        failed = st.fail_stale_trials(study, stale_after_s=2)
    assert sorted(failed) == sorted([here_dead.number, remote_silent.number])
    assert here_alive.number not in failed and remote_beating.number not in failed


def test_a_trial_starting_while_another_sweep_prepares_keeps_its_point(tmp_path, sweep_env):
    """A worker suggests its queued point one parameter at a time; a sweep preparing meanwhile
    must still see the whole point as taken (it once queued it again: run twice)."""
    from mvlab.study.preparation import _queue_points
    from mvlab.study.space import distributions

    path, _ = _study_file(sweep_env, "partial")
    config = load_study(path)
    study = open_study(config, str(tmp_path / "s.journal"))
    assert _queue_points(study, config, retry_failed=False) == len(grid_points(config)) == 6
    trial = st.claim_waiting_trial(study)
    name, dist = next(iter(distributions(config).items()))  # only the first of its params
    trial.suggest_categorical(name, dist.choices)
    assert 0 < len(study.get_trials(deepcopy=False)[trial.number].params) < 2
    assert _queue_points(study, config, retry_failed=False) == 0
    assert len(study.get_trials(deepcopy=False)) == 6


def test_prepare_lock_excludes_a_second_holder(tmp_path):
    url = str(tmp_path / "s.journal")
    order: list[str] = []

    def second() -> None:
        with st.prepare_lock(url, "s"):
            order.append("second")

    with st.prepare_lock(url, "s"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        order.append("first done")
    thread.join(timeout=10)
    assert order == ["first done", "second"]


def test_an_unreachable_database_is_one_line(sweep_env, tmp_path, capsys):
    from mvlab.cli import main

    path, _ = _study_file(sweep_env, "unreachable")
    assert main(["sweep", str(path), "--storage", "postgresql://nobody@127.0.0.1:1/none"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("mvlab sweep: warning:")]  # the tiny study's few-token warnings
    assert len(err) == 1 and "cannot open it" in err[0] and "127.0.0.1" in err[0], err

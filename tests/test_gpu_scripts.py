"""The GPU script runs end to end in its CPU smoke setting, so a lease of a GPU (minutes, rare) is
never spent on a bug in the script itself. It measures nothing here: it checks that every section
runs and writes what the README of results/gpu/ reads."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about 40 s
def test_gpu_perf_smoke_runs_every_section(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_perf.py"), "--smoke", "--quick",
         "--out", str(out), "--budget-s", "240"],
        capture_output=True, text=True, timeout=420,
        env={**os.environ, "TRITON_INTERPRET": "1"})
    log = (out / "log.txt").read_text()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FAILED" not in log and "SKIPPED" not in log and "bench failed" not in log, log

    profile = (out / "profile_t.txt").read_text()
    summary = json.loads(profile[:profile.index("}") + 1])
    assert {"scan_share", "copy_share", "total_cuda_ms_per_step"} <= summary.keys()

    with open(out / "models.csv") as fh:
        rows = list(csv.DictReader(fh))
    measured = {(r["model"], r["mode"], r["precision"]) for r in rows if r["status"] == "ok"}
    for model in ("mambavision_tiny", "convnext_atto"):
        for mode in ("infer", "train"):
            assert (model, mode, "bf16") in measured, measured
    assert all(float(r["img_s_median"]) > 0 for r in rows)
    assert (out / "throughput.png").stat().st_size > 0

    scan = json.loads((out / "scan" / "summary.json").read_text())
    assert scan["sections"] and all(s["status"] == "ok" for s in scan["sections"].values()), scan
    env = json.loads((out / "environment.json").read_text())
    assert env["device"] == "cpu" and env["torch"]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _gpu_studies(tmp_path, *args, timeout=600):
    out, work = tmp_path / "out", tmp_path / "studies"
    # Started as a shell starts a background job, with SIGINT ignored (the lease's command runs
    # so, and so may CI): the deadline must still stop the sweeps with SIGINT.
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_studies.py"), "--smoke", "--out", str(out),
         "--workdir", str(work), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
        preexec_fn=_ignore_sigint)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, (out / "log.txt").read_text()


def _unpack(out, into):
    import tarfile

    with tarfile.open(out / "studies.tgz") as tar:
        names = set(tar.getnames())
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)  # noqa: S202 - the archive this test just made
    return names


def _trials(folder, name):
    import optuna

    from mvlab.analysis.load import open_storage
    storage = open_storage(str(folder / name / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=storage).trials


@pytest.mark.slow  # about 50 s
def test_gpu_studies_smoke_runs_real_sweeps_and_packs_them(tmp_path):
    """The device script's CPU smoke: the device check, two studies' real sweeps side by side
    (one renamed and re-seeded by its own overrides), the quiet throughput pass, and an archive
    that `mvlab report` can read back."""
    out, log = _gpu_studies(tmp_path, "--budget-s", "400", "--phase",
                            "experiments/quickstart.yaml:2:3", "experiments/calibration_width.yaml:1:1",
                            "--set-for", "experiments/calibration_width.yaml",
                            "name=calibration_width_s7", "study.seeds=[7]")
    assert "device check passed" in log, log
    assert "quickstart: sweep exit 0" in log and "calibration_width: sweep exit 0" in log, log
    assert json.loads((out / "environment.json").read_text())["device"] == "cpu"

    names = _unpack(out, tmp_path / "back")
    for study in ("quickstart", "calibration_width_s7"):
        assert {f"{study}/optuna.journal", f"{study}/mlflow.db",
                f"{study}/throughput.csv"} <= names, names
    with open(tmp_path / "back" / "quickstart" / "throughput.csv") as fh:
        assert len({row["spec"] for row in csv.DictReader(fh)}) == 5  # every planned network
    done = lambda trials: [t for t in trials if t.state.name == "COMPLETE"]  # noqa: E731
    assert len(done(_trials(tmp_path / "back", "quickstart"))) == 3  # the phase's :2:3
    (width,) = done(_trials(tmp_path / "back", "calibration_width_s7"))
    assert width.params["seed"] == 7  # its --set-for, and only its: quickstart keeps its seeds
    assert {t.params["seed"] for t in done(_trials(tmp_path / "back", "quickstart"))} <= {0, 1}


@pytest.mark.slow  # about 90 s
def test_gpu_studies_stops_a_sweep_at_the_deadline_and_still_packs(tmp_path):
    """A sweep is drained shortly before the deadline, and one still training at the deadline
    is interrupted (its trial recorded as such, to be resumed); a phase without time left is
    skipped, and the throughput pass and archive run."""
    # A trial far longer than the window (5 epochs of 3,000 images), and a budget that leaves
    # the phase time to start even when the device check takes 20-30 s on a loaded machine: the
    # drain and the deadline then land inside the first trial however fast the machine is.
    out, log = _gpu_studies(tmp_path, "--budget-s", "140", "--set", "data.per_class=2000",
                            "train.epochs=5", "--phase", "experiments/quickstart.yaml:1",
                            "--phase", "experiments/calibration_width.yaml:1")
    assert "drain: quickstart finish their running trials" in log, log  # 10 s before
    assert "quickstart: stopped at the deadline (exit 130)" in log, log  # a trial outlasts 10 s
    assert "phase 2 skipped" in log and "bench study exit 0" in log, log
    _unpack(out, tmp_path / "back")
    failed = [t for t in _trials(tmp_path / "back", "quickstart") if t.state.name == "FAIL"]
    assert failed and all("interrupted" in str(t.user_attrs.get("reason")) for t in failed)


def test_gpu_studies_phase_items_are_checked(import_script):
    gpu_studies = import_script("scripts/gpu_studies.py")
    job = gpu_studies.Job.parse("experiments/hybrid_patterns.yaml:9:42")
    assert (job.workers, job.trials) == (9, 42)
    assert gpu_studies.Job.parse("experiments/quickstart.yaml").workers == 1
    for bad in ("hybrid_patterns:9", "experiments/quickstart.yaml:0", "experiments/q.yaml:two"):
        with pytest.raises(SystemExit, match="STUDY.yaml"):
            gpu_studies.Job.parse(bad)

    studies = [Path("experiments/a.yaml"), Path("experiments/b.yaml")]
    per_study = gpu_studies.study_settings(studies, ["train.device=cuda"],
                                           [["experiments/b.yaml", "train.lr=1e-3", "name=b2"]])
    assert per_study == {studies[0]: ["train.device=cuda"],
                         studies[1]: ["train.device=cuda", "train.lr=1e-3", "name=b2"]}
    with pytest.raises(SystemExit, match="--set-for b.yaml: not a study of any --phase"):
        gpu_studies.study_settings(studies, [], [["b.yaml", "train.lr=1e-3"]])


def test_gpu_studies_prepares_every_data_setting_a_grid_trains_on(import_script):
    gpu_studies = import_script("scripts/gpu_studies.py")
    from mvlab.study import load_study

    budget = load_study(REPO / "experiments" / "calibration_budget.yaml")
    assert sorted(d.contour_length for d in gpu_studies.data_settings(budget)) == [6, 8, 10]
    plain = load_study(REPO / "experiments" / "calibration.yaml")
    assert gpu_studies.data_settings(plain) == [plain.data]

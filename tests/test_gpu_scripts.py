"""The GPU script runs end to end in its CPU smoke setting, so a lease of a GPU (minutes, rare) is
never spent on a bug in the script itself. It measures nothing here: it checks that every section
runs and writes what the README of results/gpu/ reads."""
from __future__ import annotations

import csv
import json
import os
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


@pytest.mark.slow  # about 50 s
def test_gpu_studies_smoke_runs_real_sweeps_and_packs_them(tmp_path):
    """The device script's CPU smoke: the device check, two studies' real sweeps side by side,
    the quiet throughput pass, and an archive that `mvlab report` can read back."""
    import tarfile

    out, work = tmp_path / "out", tmp_path / "studies"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_studies.py"), "--smoke", "--out", str(out),
         "--workdir", str(work), "--budget-s", "400",
         "--phase", "experiments/quickstart.yaml:2:3", "experiments/calibration_width.yaml:1:1"],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "device check passed" in log and "quickstart: sweep exit 0" in log, log
    assert json.loads((out / "environment.json").read_text())["device"] == "cpu"

    with tarfile.open(out / "studies.tgz") as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / "back", filter="data")
    for study in ("quickstart", "calibration_width"):
        assert {f"{study}/optuna.journal", f"{study}/throughput.csv"} <= names, names
    with open(tmp_path / "back" / "quickstart" / "throughput.csv") as fh:
        assert len({row["spec"] for row in csv.DictReader(fh)}) == 5  # every planned network

    import optuna
    from mvlab.analysis.load import open_storage
    study = optuna.load_study(study_name="quickstart", storage=open_storage(
        str(tmp_path / "back" / "quickstart" / "optuna.journal")))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3  # --phase ...:2:3 = at most 3 trials in that phase


def test_gpu_studies_phase_items_are_checked():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gpu_studies
    finally:
        sys.path.pop(0)
    job = gpu_studies.Job.parse("experiments/hybrid_patterns.yaml:9:42")
    assert (job.workers, job.trials) == (9, 42)
    assert gpu_studies.Job.parse("experiments/quickstart.yaml").workers == 1
    with pytest.raises(SystemExit, match="STUDY.yaml"):
        gpu_studies.Job.parse("hybrid_patterns:9")

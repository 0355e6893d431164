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

"""scripts/hostile_inputs.py: the outcome classification on known outputs, and its --smoke run
(three real CLI calls in fresh folders: a valid control, a resource bomb, a missing file)."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "hostile_inputs.py"


@pytest.fixture(scope="module")
def hostile(import_script):
    return import_script("scripts/hostile_inputs.py")


TB = """Traceback (most recent call last):
  File "/work/main/.venv/bin/mvlab", line 8, in <module>
  File "/work/main/mvlab/grammar.py", line 412, in parse
    raise ValueError(x)
ValueError: bad
"""
BROKEN = """Traceback (most recent call last):
  File "/work/main/.venv/bin/mvlab", line 3, in <module>
    from mvlab.cli import main
  File "/work/main/mvlab/models/registry.py", line 13, in <module>
ImportError: cannot import name 'TIMM_NAMES' from 'mvlab.models.mambavision' (/x/mambavision.py)
"""
MISSING_DEP = """Traceback (most recent call last):
  File "/work/main/mvlab/study/storage.py", line 40, in open
ModuleNotFoundError: No module named 'psycopg2'
"""


@pytest.mark.parametrize("code, stdout, stderr, timed_out, outcome", [
    (2, "", "mvlab show: error: stage 3: depth=1000000000 is above the limit of 64\n", False,
     "clear"),
    (2, "", "usage: mvlab show [-h]\nmvlab show: error: argument --img-size: invalid int\n",
     False, "clear"),
    (2, "", "".join(f"skipped train/c0/{i}.png\n" for i in range(5)) + "mvlab data: error: x\n",
     False, "noisy"),
    (0, "params: 1\n", "", False, "accepted"),
    (0, "params: 1\n", "mvlab show: warning: --img-size -224 is negative\n", False, "warned"),
    (0, "WARNING: stage 4 sees 2x2 tokens\n", "", False, "warned"),
    (0, "", "/x/site-packages/torch/a.py:3: UserWarning: deprecated\n", False, "accepted"),
    (0, "", "mvlab sweep: warning: stage 4 ... sees 1x1 tokens ...: fewer than 4x4, so ...\n",
     False, "accepted"),  # the tiny base study's own warning says nothing about the input
    (1, "", TB, False, "traceback"),
    (0, TB, "", False, "traceback"),   # a traceback printed by a command that exits 0 anyway
    (1, "", BROKEN, False, "broken-env"),
    (1, "", MISSING_DEP, False, "traceback"),  # a missing optional dependency is a finding
    (-6, "", "terminate called after throwing an instance of 'std::bad_alloc'\n", False,
     "killed"),
    (None, "", "", True, "timeout/hang"),
    (0, "", "", True, "timeout/hang"),
])
def test_classify_known_outcomes(hostile, code, stdout, stderr, timed_out, outcome):
    assert hostile.classify(code, stdout, stderr, timed_out) == outcome


def test_findings_depend_on_what_the_case_expects(hostile):
    assert not hostile.is_finding("error", "clear")
    assert hostile.is_finding("error", "warned")  # a warning is enough only for silent output
    assert not hostile.is_finding("warn", "warned")
    for outcome in ("accepted", "traceback", "timeout/hang", "killed", "noisy"):
        assert hostile.is_finding("error", outcome) and hostile.is_finding("warn", outcome)
    assert not hostile.is_finding("ok", "accepted") and hostile.is_finding("ok", "clear")
    assert not hostile.is_finding("error", "broken-env")  # rerun, not reported


def test_innermost_frame_and_case_ids(hostile):
    assert hostile.innermost_frame(TB) == "mvlab/grammar.py:412"
    assert hostile.innermost_frame("no traceback") == ""
    cases = hostile.cases()
    assert len({c.id for c in cases}) == len(cases) >= 60
    assert set(hostile.SMOKE) <= {c.id for c in cases}
    assert {c.expect for c in cases} <= set(hostile.ALLOWED)


@pytest.mark.slow
def test_smoke_runs_three_cases_and_writes_the_records(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path),
                           "--retries", "0"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with (tmp_path / "inputs.csv").open(newline="", encoding="utf-8") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"C01", "B06", "M04"}
    if any(r["outcome"] == "broken-env" for r in rows.values()):
        pytest.skip("mvlab does not import right now (a half-done edit in the working tree)")
    assert rows["C01"]["outcome"] == "accepted" and rows["C01"]["exit_code"] == "0"
    assert rows["B06"]["outcome"] == "clear" and rows["B06"]["exit_code"] == "2"
    assert "above the limit of 64" in rows["B06"]["last_lines"]
    assert rows["M04"]["outcome"] == "clear"
    assert not any(r["finding"] for r in rows.values())
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "| **all** |" in readme and "--smoke" in readme and "commit:" in readme

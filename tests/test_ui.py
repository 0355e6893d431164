"""What a person sees after a sweep, checked in a headless browser (Debian's chromium): the
MLflow page `mvlab sweep` prints opens on the trials with their objectives and knobs, and
`mvlab dashboard` serves the study's journal in optuna-dashboard. Also: a resumed sweep keeps
its one parent run, and the closing lines are commands that run as printed."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_sweep_e2e import TINY  # the tiny study the end-to-end tests sweep

from mvlab.cli import main as mvlab_main
from mvlab.commands import printed
from mvlab.study import SweepOptions, load_study, run_sweep
from mvlab.study.types import SweepSummary

BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                               "google-chrome"))), None)
needs_browser = pytest.mark.skipif(
    BROWSER is None, reason="no headless browser: apt-get install chromium (scripts/test.sh "
                            "installs it when it runs as root)")
DESCRIPTION = "Two patterns, for the UI test."
THREADS = ["train.threads=1"]


@dataclass
class Swept:
    folder: Path
    study_file: Path
    first: SweepSummary
    closing: dict[str, str]  # "serve", "trials", "optuna", "report" -> what the resume printed
    front: list[str]  # the resume's lines of the Pareto front


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Swept:
    """A finished two-trial sweep, then the same command again through the CLI (a resume with
    nothing left to do), whose closing lines the tests follow."""
    folder = tmp_path_factory.mktemp("ui")
    text = TINY.format(name="ui_tiny", space="  pattern: [last_half, attn_only]",
                       tracking=f"sqlite:///{folder / 'mlflow.db'}")
    study_file = folder / "ui_tiny.yaml"
    study_file.write_text(f"{text}description: {DESCRIPTION}\n")
    old = Path.cwd()
    os.chdir(folder)  # the study's workdir, studies/ui_tiny, is relative
    try:
        first = run_sweep(load_study(study_file, THREADS), SweepOptions(progress=False))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = mvlab_main(["sweep", str(study_file), "--set", *THREADS, "--no-progress"])
    finally:
        os.chdir(old)
    assert code == 0 and first.counts["COMPLETE"] == 2
    closing = {}
    front = [line.strip() for line in out.getvalue().splitlines() if line.startswith("  #")]
    for line in out.getvalue().splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key in ("serve", "trials", "optuna", "report"):
            closing[key] = value.strip()
    return Swept(folder, study_file, first, closing, front)


@pytest.mark.slow
def test_a_resumed_sweep_keeps_one_parent_and_labels_the_experiment(swept):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=swept.first.tracking_uri)
    experiment = client.get_experiment_by_name("ui_tiny")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_id for p in parents] == [swept.first.parent_run_id]
    assert parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") ==
                swept.first.parent_run_id]
    assert len(children) == 2 and len(runs) == 3
    for run in children:  # what the trials view shows: objectives as metrics, knobs as params
        assert {"heldout_top1", "throughput"} <= set(run.data.metrics)
        assert run.data.params["pattern"] in ("last_half", "attn_only")

    tags = experiment.tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"] == DESCRIPTION
    view = json.loads(tags["mlflow.sharedViewState.trials"])
    assert view["orderByKey"] == "metrics.`heldout_top1`" and view["orderByAsc"] is False
    assert {"metrics.`heldout_top1`", "metrics.`throughput`", "params.`pattern`"} <= set(
        view["selectedColumns"])
    front = view["compareRunCharts"][0]
    assert (front["type"], front["xaxis"]["key"], front["yaxis"]["key"]) == (
        "SCATTER", "heldout_top1", "throughput")


@pytest.mark.slow
def test_closing_lines_name_this_environments_programs(swept):
    bin_dir = Path(sys.executable).parent
    for key, program in (("serve", "mlflow"), ("optuna", "mvlab"), ("report", "mvlab")):
        argv = shlex.split(swept.closing[key], comments=True)
        found = shutil.which(argv[0]) or str(swept.folder / argv[0])
        assert os.path.samefile(found, bin_dir / program), (key, argv)
    # The sweep's own --set comes along, so the printed commands find a renamed or moved study.
    report = shlex.split(swept.closing["report"])[1:]
    assert report == ["report", str(swept.study_file), "--set", *THREADS]
    # The front: two decimals throughout (not "10" next to "13.33") and the seed.
    assert swept.front and len(swept.front) == len(swept.first.pareto)
    for line in swept.front:
        assert re.fullmatch(r"#\d+: heldout_top1=\d+\.\d\d, throughput=\d+\.\d\d  "
                            r"pattern=(last_half|attn_only) seed=0", line), line


def test_program_is_bare_only_when_the_shell_finds_this_environments_script(tmp_path,
                                                                             monkeypatch):
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "mvlab").is_file():
        pytest.skip("mvlab is not installed as a script in this environment")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(bin_dir.parent.parent)
    assert printed.program("mvlab") == f"{bin_dir.parent.name}/bin/mvlab"
    monkeypatch.chdir(tmp_path)
    assert printed.program("mvlab") == str(bin_dir / "mvlab")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert printed.program("mvlab") == "mvlab"
    assert printed.program("no-such-program") == "no-such-program"


@pytest.mark.slow
def test_the_printed_report_command_finds_a_study_the_sweep_renamed(swept, tmp_path,
                                                                    monkeypatch, capsys):
    monkeypatch.chdir(swept.folder)
    renamed = [*THREADS, "name=ui_renamed"]
    assert mvlab_main(["sweep", str(swept.study_file), "--no-progress", "--set", *renamed]) == 0
    printed_report = next(line.partition(":")[2].strip() for line in
                          capsys.readouterr().out.splitlines() if line.startswith("report:"))
    argv = shlex.split(printed_report)[1:]
    assert argv[-2:] == ["--set", *renamed][-2:]
    assert mvlab_main([*argv, "--out", str(tmp_path / "report")]) == 0
    assert "ui_renamed" in (tmp_path / "report" / "README.md").read_text()


def test_dashboard_before_any_sweep_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    study_file = tmp_path / "fresh.yaml"
    study_file.write_text(TINY.format(name="fresh", space="  pattern: [last_half]",
                                      tracking=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert mvlab_main(["dashboard", str(study_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Optuna storage at studies/fresh/optuna.journal" in err[0]
    assert f"sweep {study_file}` first" in err[0]


@pytest.mark.slow
@needs_browser
def test_the_printed_mlflow_page_shows_the_trials_and_their_objectives(swept, tmp_path):
    from mlflow import MlflowClient

    port = _free_port()
    serve = shlex.split(swept.closing["serve"]) + ["--host", "127.0.0.1", "--port", str(port),
                                                   "--workers", "1"]
    page = swept.closing["trials"].replace(f":{printed.MLFLOW_UI_PORT}/", f":{port}/")
    assert page.startswith(f"http://127.0.0.1:{port}/#/experiments/")
    client = MlflowClient(tracking_uri=swept.first.tracking_uri)
    experiment = client.get_experiment_by_name("ui_tiny")
    trials = [r for r in client.search_runs([experiment.experiment_id])
              if "mlflow.parentRunId" in r.data.tags]
    with _server(serve, f"http://127.0.0.1:{port}/health", tmp_path / "mlflow.log"):
        table = _browse(page, tmp_path / "mlflow_table.png")
    assert "Detect Issues" not in table  # not the GenAI overview MLflow 3 opens by default
    assert DESCRIPTION in table
    for run in trials:  # every trial a row: its name, objectives and knob in the columns
        assert run.info.run_name in table
        for value in (run.data.metrics["heldout_top1"], run.data.metrics["throughput"]):
            assert _as_shown(value) in table, (run.info.run_name, value)
        assert f">{run.data.params['pattern']}<" in table


@pytest.mark.slow
@needs_browser
def test_the_printed_dashboard_command_serves_the_study(swept, tmp_path):
    from mvlab.study.locations import storage_url_for
    from mvlab.study.preparation import open_study

    port = _free_port()
    command = shlex.split(swept.closing["optuna"], comments=True) + ["--port", str(port)]
    old = Path.cwd()
    os.chdir(swept.folder)
    try:
        config = load_study(swept.study_file, THREADS)
        trials = open_study(config, storage_url_for(config)).get_trials()
    finally:
        os.chdir(old)
    with _server(command, f"http://127.0.0.1:{port}/api/studies", tmp_path / "dashboard.log",
                 cwd=swept.folder) as base:
        studies = json.loads(urllib.request.urlopen(f"{base}/api/studies", timeout=10).read())
        [study_id] = [s["study_id"] for s in studies["study_summaries"]
                      if s["study_name"] == "ui_tiny"]
        front = _browse(f"{base}/dashboard/studies/{study_id}", tmp_path / "dashboard.png")
        listed = _browse(f"{base}/dashboard/studies/{study_id}/trials",
                         tmp_path / "dashboard_trials.png")
    assert "Pareto Front" in front and "heldout_top1" in front and "throughput" in front
    for trial in trials:
        assert f"Trial {trial.number}" in listed
    shown = trials[0]  # the list opens on the first trial: its objectives and params
    assert ", ".join(_as_shown(v) for v in shown.values) in listed
    assert shown.params["pattern"] in listed


# ------------------------------------------------------------------------------------ helpers
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_shown(value: float) -> str:
    """A number as JavaScript prints it (10.0 -> "10")."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@contextlib.contextmanager
def _server(argv: list[str], ready_url: str, log: Path, cwd: Path | None = None,
            timeout_s: float = 180):
    """Run ``argv`` in its own process group until the block ends; yields its base URL once
    ``ready_url`` answers."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(ready_url, timeout=5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{argv[0]} did not serve {ready_url}:\n"
                                f"{log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield ready_url.split("/", 3)[0] + "//" + ready_url.split("/", 3)[2]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _browse(url: str, screenshot: Path) -> str:
    """The page's DOM after its scripts ran, as headless chromium renders it; the screenshot
    lands in ``screenshot`` (and in ``$MVLAB_UI_SHOTS`` when set, to look at)."""
    profile = screenshot.parent / f"{screenshot.stem}-profile"  # no state carried between pages
    done = subprocess.run(
        [BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1600,1000",
         # scripts get 15 s of page time; a request that never ends stops it after 90 s
         "--virtual-time-budget=15000", "--timeout=90000", f"--screenshot={screenshot}",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and screenshot.is_file(), done.stderr[-2000:]
    if os.environ.get("MVLAB_UI_SHOTS"):
        Path(os.environ["MVLAB_UI_SHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(os.environ["MVLAB_UI_SHOTS"]) / screenshot.name)
    return done.stdout

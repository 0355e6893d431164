"""``mvlab dashboard FILE``: optuna-dashboard on the study's Optuna storage (`make dashboard`)."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

DESCRIPTION = """\
Serve optuna-dashboard on the Optuna storage of the study in FILE (by default its journal
file, studies/<name>/optuna.journal): the Pareto front, the history and every trial, refreshed
while `mvlab sweep` runs. Needs the dashboard extra (pip install 'mvlab[dashboard]'; `make`
installs it)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard", help="optuna-dashboard on a study's storage (live Pareto front)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", metavar="FILE", help="the study YAML (see experiments/)")
    parser.add_argument("--storage", metavar="URL",
                        help="the Optuna storage the sweep used, if not the file's")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], action="extend",
                        metavar="KEY=VALUE", help="the overrides the sweep ran with (name, "
                                                  "storage, workdir)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from mvlab.commands.printed import program
    from mvlab.errors import StudyError
    from mvlab.study import load_study
    from mvlab.study.locations import check_storage_folder, storage_url_for
    from mvlab.study.storage import describe_storage

    config = load_study(args.file, args.overrides)
    url = storage_url_for(config, args.storage)
    # The sweep's own check, creating nothing: a bad scheme or a path under a file is one line
    # here rather than optuna-dashboard's traceback after the exec.
    check_storage_folder(url, create=False)
    target = url[len("journal:"):] if url.startswith("journal:") else url
    local = target[len("sqlite:///"):] if target.startswith("sqlite:///") else target
    # A SQLite file the sweep has not written yet would be created empty by the dashboard.
    if "://" not in local and local != ":memory:" and not Path(local).is_file():
        raise StudyError(f"{args.file}: no Optuna storage at {local} yet; run `"
                         f"{program('mvlab')} sweep {args.file}` first (or give --storage)")
    executable = _dashboard_executable()
    if executable is None:
        raise StudyError("optuna-dashboard is not installed; pip install 'mvlab[dashboard]' "
                         "(`make` installs it into .venv)")
    print(f"mvlab dashboard: {describe_storage(url)} at http://{args.host}:{args.port}",
          file=sys.stderr, flush=True)
    os.execv(executable, [executable, "--host", args.host, "--port", str(args.port), target])
    return 0  # not reached


def _dashboard_executable() -> str | None:
    beside = Path(sys.executable).parent / "optuna-dashboard"
    return str(beside) if beside.is_file() else shutil.which("optuna-dashboard")

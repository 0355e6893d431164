"""Commands the CLI prints for the user to run next, written so that they work as printed:
``make`` installs mvlab, mlflow and optuna-dashboard into ``.venv/bin``, which is not on PATH."""
from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

MLFLOW_UI_PORT = 5000  # mlflow ui's default


def program(name: str) -> str:
    """How to type the console script ``name`` of this Python environment: bare when the
    shell finds this very script on PATH, else its path (relative to the current folder when
    below it, e.g. ``.venv/bin/mvlab``). Without the script, ``mvlab`` falls back to
    ``python -m mvlab.cli``; anything else stays bare."""
    script = Path(sys.executable).parent / name
    if not script.is_file():
        if name == "mvlab":
            return f"{shlex.quote(sys.executable)} -m mvlab.cli"
        return name
    found = shutil.which(name)
    if found and os.path.samefile(found, script):
        return name
    try:
        shown = script.relative_to(Path.cwd())
    except ValueError:
        shown = script
    return shlex.quote(str(shown))


def mlflow_ui(tracking_uri: str) -> str | None:
    """The command that serves a local MLflow store's UI; None for an MLflow server (it
    serves its own UI at ``tracking_uri``)."""
    if tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{program('mlflow')} ui --backend-store-uri {shlex.quote(tracking_uri)}"


def mlflow_server(tracking_uri: str) -> str:
    """The address the trials page lives under: the server itself, or a local ``mlflow ui``."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return f"http://127.0.0.1:{MLFLOW_UI_PORT}"

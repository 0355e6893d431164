"""Where a study's records go unless its file or the command line says otherwise.

Light on purpose: ``mvlab sweep --check`` prints these without opening either store."""
from __future__ import annotations

from pathlib import Path

from mvlab import records
from mvlab.study.types import StudyConfig


def default_storage_url(workdir: Path) -> str:
    """The per-study journal file (works for one worker and for ``--workers N``)."""
    return str(workdir / records.JOURNAL_FILE)


def default_tracking_uri(workdir: Path) -> str:
    """MLflow's SQLite store beside the journal (absolute: MLflow resolves it per process)."""
    return f"sqlite:///{workdir.resolve() / records.TRACKING_DB_FILE}"


def default_workdir(name: str) -> str:
    """A study's folder when its file names none (``workdir:`` may use ``{name}`` too)."""
    return records.WORKDIR.format(study=name)


def storage_url_for(config: StudyConfig, override: str | None = None) -> str:
    return override or config.storage or default_storage_url(config.workdir)


def tracking_uri_for(config: StudyConfig) -> str:
    return config.tracking_uri or default_tracking_uri(config.workdir)

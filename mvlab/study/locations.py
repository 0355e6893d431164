"""Where a study's records go unless its file or the command line says otherwise.

Light on purpose: ``mvlab sweep --check`` prints and checks these without opening either store
(no Optuna, no MLflow, no torch)."""
from __future__ import annotations

import os
from pathlib import Path

from mvlab import records
from mvlab.errors import StudyError
from mvlab.safety import mask_url
from mvlab.study.types import StudyConfig

# The database dialects SQLAlchemy itself ships; a URL of any other scheme (ftp://, http://)
# would fail only when opened, with SQLAlchemy's "Can't load plugin". Third-party dialects
# register an entry point and are accepted too (``_database_schemes``).
SQLALCHEMY_DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")


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


def _database_schemes() -> set[str]:
    from importlib.metadata import entry_points

    extra = {ep.name.split(".")[0] for ep in entry_points(group="sqlalchemy.dialects")}
    return set(SQLALCHEMY_DIALECTS) | extra


def storage_usage(url: str) -> str:
    """The one line a storage that is not one gets (the sweep, ``--check``, the dashboard)."""
    return (f"storage {mask_url(url)!r}: use journal:PATH, a file ending in "
            f"{', '.join(records.JOURNAL_SUFFIXES)}, sqlite:///PATH or postgresql://user@host/db "
            f"(other SQLAlchemy databases: {', '.join(SQLALCHEMY_DIALECTS[2:])})")


def check_storage_url(url: str) -> None:
    """StudyError unless ``url`` names a journal file or a database SQLAlchemy can open (by its
    scheme; whether the server answers is the sweep's to find out)."""
    if "\x00" in url:
        raise StudyError(f"storage {url!r}: holds a NUL character; remove it")
    if records.journal_path(url) is not None:
        return
    scheme, sep, _ = url.partition("://")
    dialect = scheme.split("+", 1)[0].lower()
    if not sep or dialect not in _database_schemes():
        raise StudyError(storage_usage(url))


def check_writable_folder(folder: Path, what: str, create: bool = True) -> None:
    """``folder`` exists or is created, and this user may write in it; StudyError naming
    ``what`` otherwise. ``create=False`` (``--check``) creates nothing: the nearest existing
    folder above must be a writable folder."""
    if not create:
        try:
            existing = folder
            while not os.path.lexists(existing) and existing != existing.parent:
                existing = existing.parent
        except ValueError:
            raise StudyError(f"{what!r}: not a path (it holds a NUL character)") from None
        if existing.exists() and not existing.is_dir():
            raise StudyError(f"{what}: cannot create the folder {folder} ({existing} is a file); "
                             f"choose a writable place")
        folder = existing
    else:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyError(f"{what}: cannot create the folder {folder} "
                             f"({exc.strerror or exc}); choose a writable place") from None
        except ValueError:  # a NUL character in the path
            raise StudyError(f"{what!r}: not a path (it holds a NUL character)") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StudyError(f"{what}: the folder {folder} is not writable; choose a writable place")


def check_storage_folder(url: str, create: bool = True) -> None:
    """StudyError unless ``url`` is a storage (``check_storage_url``) and a file storage's folder
    exists (or can be made) and is writable, so a bad scheme, a path under a file or in a
    read-only folder is one line before the sweep takes any lock."""
    check_storage_url(url)
    path = records.journal_path(url)
    if path is None and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///"):])
    if path is None:
        return
    check_writable_folder(path.parent, f"storage {path}", create)
    if path.is_dir():
        raise StudyError(f"storage {path}: is a folder; give a file path (or drop --storage)")


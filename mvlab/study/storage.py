"""Where a study's trials live (Optuna storage) and how a killed worker's trials are recovered.

Defaults, following Optuna's advice: a journal file ``<workdir>/optuna.journal`` (safe for
several processes on one host or NFS); ``sqlite:///...`` for a single worker when asked for;
``postgresql://...`` (or any SQLAlchemy URL) to share one study across hosts.

Optuna's journal backend has no heartbeat, so every running trial records its host, process id
and process start time, and refreshes a heartbeat timestamp each epoch. A RUNNING trial is stale
when its process is gone (same host) or its heartbeat is older than ``stale_after_s`` (other
hosts); stale trials are marked FAIL with the reason and flagged for re-queueing."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from mvlab.errors import StudyError

HOST_ATTR, PID_ATTR, START_ATTR, HEARTBEAT_ATTR = "host", "pid", "pid_start", "heartbeat"
REQUEUE_ATTR = "requeue"  # set on trials that failed for reasons outside the trial itself
REASON_ATTR = "reason"  # the name mvlab.analysis reads


def default_storage_url(workdir: Path) -> str:
    """The per-study journal file (works for one worker and for ``--workers N``)."""
    return str(workdir / "optuna.journal")


def open_storage(url: str, workers: int = 1) -> BaseStorage:
    """An Optuna storage for ``url``: ``journal:PATH`` (or a path ending in .journal/.log),
    ``sqlite:///PATH`` (one worker only), or a SQLAlchemy URL such as ``postgresql://...``."""
    path = _journal_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The open-lock works on every POSIX file system, NFS included (symlink locks do not).
        return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    if url.startswith("sqlite"):
        if workers > 1:
            raise StudyError(f"storage {url}: SQLite is not safe for {workers} concurrent workers "
                             f"('database is locked'); drop --storage to use the journal file, "
                             f"or use a postgresql:// URL")
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
    if "://" not in url:
        raise StudyError(f"storage {url!r}: use journal:PATH, a file ending in .journal, "
                         f"sqlite:///PATH or postgresql://user@host/db")
    try:
        return RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except ImportError as exc:
        raise StudyError(f"storage {url}: the database driver is missing ({exc.name}); for "
                         f"PostgreSQL: pip install 'mvlab[postgres]'") from None
    except Exception as exc:  # connection refused, bad credentials, unknown database
        raise StudyError(f"storage {url}: cannot open it ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0]})") from None


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


def _journal_path(url: str) -> Path | None:
    if url.startswith("journal:"):
        return Path(url[len("journal:"):]).expanduser()
    if "://" not in url and url.endswith((".journal", ".log")):
        return Path(url).expanduser()
    return None


def describe_storage(url: str) -> str:
    """The URL without a password, for logs and MLflow params."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


# --------------------------------------------------------------------------- owner / staleness
def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against a reused pid), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_attrs() -> dict[str, object]:
    pid = os.getpid()
    return {HOST_ATTR: socket.gethostname(), PID_ATTR: pid,
            START_ATTR: process_start_time(pid), HEARTBEAT_ATTR: time.time()}


def _owner_alive(attrs: dict) -> bool | None:
    """True/False when this host can tell, None when the owner ran on another host."""
    if attrs.get(HOST_ATTR) != socket.gethostname() or PID_ATTR not in attrs:
        return None
    pid = int(attrs[PID_ATTR])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = attrs.get(START_ATTR)
    return started is None or process_start_time(pid) in (None, started)


def stale_reason(trial: optuna.trial.FrozenTrial, stale_after_s: float,
                 now: float | None = None) -> str | None:
    """Why a RUNNING trial's worker is gone, or None while it may still be alive."""
    attrs = trial.user_attrs
    alive = _owner_alive(attrs)
    if alive is False:
        return (f"stale: worker process {attrs.get(PID_ATTR)} on {attrs.get(HOST_ATTR)} "
                f"is gone (killed or crashed)")
    if alive is None:
        beat = attrs.get(HEARTBEAT_ATTR)
        if beat is None and trial.datetime_start is not None:
            beat = trial.datetime_start.timestamp()
        if beat is not None and (now or time.time()) - float(beat) > stale_after_s:
            return (f"stale: no heartbeat for {((now or time.time()) - float(beat)) / 60:.0f} "
                    f"min from {attrs.get(HOST_ATTR, 'an unknown host')}")
    return None


def fail_stale_trials(study: optuna.Study, stale_after_s: float) -> list[int]:
    """Mark RUNNING trials of dead workers FAIL (reason + requeue flag); returns their numbers."""
    storage = study._storage  # the Study's public API cannot change another trial's state
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(trial, stale_after_s)
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, REASON_ATTR, reason)
            storage.set_trial_user_attr(trial._trial_id, REQUEUE_ATTR, True)
            if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                failed.append(trial.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its worker finished it meanwhile
    return failed


def claim_waiting_trial(study: optuna.Study) -> optuna.Trial | None:
    """Atomically take one queued (WAITING) trial, or None when the queue is empty.

    Unlike ``Study.ask`` this never creates a fresh trial, so workers of a grid stop cleanly
    when the grid is done instead of racing to sample extra points."""
    storage = study._storage
    for frozen in storage.get_all_trials(study._study_id, deepcopy=False,
                                         states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(frozen._trial_id, TrialState.RUNNING):
                return optuna.Trial(study, frozen._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None

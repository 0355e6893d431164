"""Where a study's trials live (Optuna storage) and how a killed worker's trials are recovered.

Defaults, following Optuna's advice: a journal file ``<workdir>/optuna.journal`` (safe for
several processes on one host or NFS); ``sqlite:///...`` for a single worker when asked for;
``postgresql://...`` (or any SQLAlchemy URL) to share one study across hosts.

Every running trial records its host, process id and process start time, and a background
thread beats while it runs (``heartbeat``): on a database storage through Optuna's own RDB
heartbeat (``heartbeat_interval``/``grace_period``), on the journal file as the trial's
``heartbeat`` user attribute. A RUNNING trial is stale when its process is gone (same host: checked
at once) or it has not beaten for ``stale_after_s`` (other hosts); stale trials are marked FAIL
with the reason and flagged for re-queueing. Preparing a study (queueing its points, creating the
MLflow experiment) runs under ``prepare_lock``, so sweeps started at the same moment on one or
many hosts queue every point once."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from mvlab import records
from mvlab.errors import StudyError
from mvlab.safety import mask_credentials, mask_url
from mvlab.study.locations import (  # re-exported: the sweep's checks live with the locations
    check_storage_folder,
    check_storage_url,
    check_writable_folder,
    default_storage_url,
)

log = logging.getLogger(__name__)
HOST_ATTR, PID_ATTR = records.HOST, records.PID
START_ATTR, HEARTBEAT_ATTR = records.PID_START, records.HEARTBEAT
REQUEUE_ATTR = records.REQUEUE  # set on trials that failed for reasons outside the trial itself
REASON_ATTR = records.REASON

__all__ = ["default_storage_url", "check_storage_folder", "check_storage_url",
           "check_writable_folder", "open_storage", "repair_journal", "describe_storage",
           "heartbeat", "heartbeat_interval", "fail_stale_trials", "claim_waiting_trial",
           "prepare_lock", "owner_attrs", "owner_alive", "stale_reason"]


def heartbeat_interval(stale_after_s: float) -> int:
    """Seconds between heartbeats: a minute, or a quarter of a shorter staleness limit."""
    return int(max(1, min(60, stale_after_s // 4)))


def open_storage(url: str, workers: int = 1, stale_after_s: float | None = None) -> BaseStorage:
    """An Optuna storage for ``url``: ``journal:PATH`` (or a path ending in .journal, .log or
    .jsonl), ``sqlite:///PATH`` (one worker only), or a SQLAlchemy URL such as
    ``postgresql://...``.

    With ``stale_after_s`` a database storage keeps Optuna's heartbeat: a trial that has not
    beaten for that long is stale (``fail_stale_trials``)."""
    path = _journal_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The open-lock works on every POSIX file system, NFS included (symlink locks do not).
        lock = JournalFileOpenLock(str(path))
        lock.acquire()  # the writers' lock: no record is half-written while we look
        try:
            note = repair_journal(path)
        finally:
            lock.release()
        if note:
            log.warning("%s", note)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    if url.startswith("sqlite"):
        if workers > 1:
            raise StudyError(f"storage {url}: SQLite is not safe for {workers} concurrent workers "
                             f"('database is locked'); drop --storage to use the journal file, "
                             f"or use a postgresql:// URL")
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
    check_storage_url(url)
    beat: dict = {}
    if stale_after_s is not None:
        interval = heartbeat_interval(stale_after_s)
        beat = {"heartbeat_interval": interval,
                "grace_period": int(max(interval + 1, stale_after_s))}
    try:
        return _open_rdb(engine_url(url), beat)
    except ImportError as exc:
        missing = exc.name or _first_line(exc)
        raise StudyError(f"storage {describe_storage(url)}: the database driver is missing "
                         f"({missing}); for PostgreSQL: pip install 'mvlab[postgres]'") from None
    except Exception as exc:  # connection refused, bad credentials, unknown database
        raise StudyError(mask_credentials(f"storage {url}: cannot open it ({type(exc).__name__}: "
                                          f"{_first_line(exc)})")) from None


def _open_rdb(url: str, beat: dict, attempts: int = 5) -> RDBStorage:
    """``RDBStorage``; workers opening an empty database at the same moment race to create
    Optuna's tables ("already exists", "duplicate key"): the losers retry."""
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeat_interval is "experimental" (Optuna 2.9+)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=_engine_kwargs(url), **beat)
        except Exception as exc:  # sqlalchemy's IntegrityError / ProgrammingError
            text = str(exc).lower()
            if attempt == attempts - 1 or not ("already exists" in text or "duplicate" in text):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


_RECORD_START = b'{"op_code":'  # every journal record; inside a JSON string it is escaped


def repair_journal(path: Path) -> str | None:
    """Make a journal whose writer died mid-record readable again; returns what was done (one
    line) or None when nothing needed doing. Call it under the journal's lock.

    Optuna reads past a torn last record, but the next append lands on the same line and from
    then on every reader fails. Here a torn tail is cut off (a tail that is a whole record only
    gets its newline), a record glued onto a torn one by such an append is kept and the torn
    part dropped, and a copy of the original is kept next to it (``<file>.torn-<time>``). A
    file that is not a journal at all raises ``StudyError``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StudyError(f"storage {path}: cannot read it ({exc.strerror or exc})") from None
    if not data:
        return None
    body, newline, tail = data.rpartition(b"\n")
    lines = body.split(b"\n") if newline else []
    kept: list[bytes] = []
    dropped = glued = 0
    for number, line in enumerate(lines, start=1):
        whole = line.startswith(_RECORD_START) and line.count(_RECORD_START) == 1
        if (whole and number < len(lines)) or _is_record(line):
            kept.append(line)
            continue
        start = line.rfind(_RECORD_START)
        if start > 0 and _is_record(line[start:]):
            kept.append(line[start:])  # a whole record appended onto a torn one
            glued += 1
            dropped += start
        elif number == len(lines) and not tail and kept:
            dropped += len(line) + 1  # a torn last record that got a newline
        else:
            what = "not an Optuna journal" if not kept else f"line {number} is not a journal record"
            raise StudyError(f"storage {path}: {what}; point --storage (or the study's "
                             f"storage:) at the study's .journal file, or move this file away")
    if tail:
        if _is_record(tail):
            kept.append(tail)  # cut just before its newline
        else:
            dropped += len(tail)
    if not kept and tail[:len(_RECORD_START)] != _RECORD_START[:len(tail)]:
        raise StudyError(f"storage {path}: not an Optuna journal (no complete record); point "
                         f"--storage (or the study's storage:) at the study's .journal file, or "
                         f"move this file away")
    repaired = b"\n".join(kept) + b"\n" if kept else b""  # else the first record was torn
    if repaired == data:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.torn-{stamp}")
    for n in range(2, 1000):
        if not backup.exists():
            break
        backup = path.with_name(f"{path.name}.torn-{stamp}-{n}")
    shutil.copy2(path, backup)
    tmp = path.with_name(f".{path.name}.repair-{os.getpid()}")
    tmp.write_bytes(repaired)
    shutil.copymode(path, tmp)
    os.replace(tmp, path)
    what = f"{glued} record(s) glued onto torn ones" if glued else "its last record was cut off"
    return (f"storage {path}: {what} (a writer died mid-write?); removed {dropped} byte(s) of "
            f"partial records, kept the original as {backup.name}")


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "op_code" in record


def engine_url(url: str) -> str:
    """``url`` with a driver SQLAlchemy can load: a bare ``postgresql://`` means psycopg 3 to
    SQLAlchemy 2.1, while ``mvlab[postgres]`` installs psycopg2; use whichever is installed."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


def _journal_path(url: str) -> Path | None:
    return records.journal_path(url)


def describe_storage(url: str) -> str:
    """The URL with its password masked (``user:***@host``), for output, logs and MLflow."""
    return mask_url(url)


# --------------------------------------------------------------------------- owner / staleness
def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against a reused pid), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def owner_attrs() -> dict[str, object]:
    pid = os.getpid()
    return {HOST_ATTR: socket.gethostname(), PID_ATTR: pid,
            START_ATTR: process_start_time(pid), HEARTBEAT_ATTR: time.time()}


def owner_alive(attrs: dict) -> bool | None:
    """Whether the process in ``attrs`` (host, pid, pid_start) lives: True/False when this host
    can tell, None when it ran on another host."""
    if attrs.get(HOST_ATTR) != socket.gethostname() or attrs.get(PID_ATTR) is None:
        return None
    pid = int(attrs[PID_ATTR])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _is_zombie(pid):  # killed, not yet reaped by its parent: it will never beat again
        return False
    started = attrs.get(START_ATTR)
    return started in (None, "None") or process_start_time(pid) in (None, str(started))


def stale_reason(trial: optuna.trial.FrozenTrial, stale_after_s: float,
                 now: float | None = None, attr_heartbeat: bool = True) -> str | None:
    """Why a RUNNING trial's worker is gone, or None while it may still be alive.

    ``attr_heartbeat``: judge other hosts by the ``heartbeat`` user attribute (the journal's
    rule); False where Optuna's RDB heartbeat judges them instead."""
    attrs = trial.user_attrs
    alive = owner_alive(attrs)
    if alive is False:
        return (f"stale: worker process {attrs.get(PID_ATTR)} on {attrs.get(HOST_ATTR)} "
                f"is gone (killed or crashed)")
    if alive is None and (attr_heartbeat or HOST_ATTR not in attrs):
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
    rdb_beats = _rdb_heartbeat(storage)
    # Optuna's own verdict (private helper of optuna.storages.fail_stale_trials, which we cannot
    # call: it fails the trials without a reason, and a finished trial takes no more attributes).
    beat_stale = set(storage._get_stale_trial_ids(study._study_id)) if rdb_beats else set()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(trial, stale_after_s, attr_heartbeat=not rdb_beats)
        if reason is None and trial._trial_id in beat_stale:
            reason = (f"stale: no heartbeat for over {storage.grace_period} s from "
                      f"{trial.user_attrs.get(HOST_ATTR, 'an unknown host')}")
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


def _rdb_heartbeat(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial, interval: float) -> Iterator[None]:
    """Beat for ``trial`` every ``interval`` seconds while the block runs (a daemon thread)."""
    storage, trial_id = study._storage, trial._trial_id
    rdb_beats = _rdb_heartbeat(storage)
    stop = threading.Event()

    def beat() -> bool:
        try:
            if rdb_beats:
                storage.record_heartbeat(trial_id)
            else:
                storage.set_trial_user_attr(trial_id, HEARTBEAT_ATTR, time.time())
            return True
        except optuna.exceptions.UpdateFinishedTrialError:
            return False  # failed as stale by another worker meanwhile (we were too slow)
        except Exception as exc:  # noqa: BLE001 - a missed beat is retried, never fatal
            log.debug("heartbeat of trial %s: %s", trial.number, exc)
            return True

    def run() -> None:
        while not stop.wait(interval) and beat():
            pass

    beat()
    thread = threading.Thread(target=run, name=f"mvlab-heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval + 5)


@contextlib.contextmanager
def prepare_lock(url: str, study_name: str) -> Iterator[None]:
    """Serialise the preparation of one study across processes and hosts.

    Journal and SQLite storages: an exclusive ``flock`` on ``<file>.prepare.lock`` next to the
    storage (local disks and NFS). PostgreSQL: a session advisory lock keyed by the study name.
    Other databases: no lock (start the first sweep alone, then the others)."""
    path = _journal_path(url)
    if path is None and url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
    if path is not None:
        lock_path = path.with_name(path.name + ".prepare.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if url.startswith("postgresql"):
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(f"mvlab:{study_name}".encode()).digest()[:8],
                             "big", signed=True)
        try:
            engine = sqlalchemy.create_engine(engine_url(url), poolclass=sqlalchemy.pool.NullPool)
            conn = engine.connect()
        except Exception as exc:  # no driver, refused, bad credentials, no such database
            hint = "; pip install 'mvlab[postgres]'" if isinstance(exc, ImportError) else ""
            raise StudyError(mask_credentials(f"storage {url}: cannot open it "
                                              f"({type(exc).__name__}: {_first_line(exc)}){hint}")
                             ) from None
        try:
            with conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            engine.dispose()
        return
    yield


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__

"""Ctrl-C (and the SIGTERM a sweep relays to its workers) never cuts a database write in half.

Both arrive as KeyboardInterrupt wherever the main thread happens to be. Inside an MLflow or
Optuna write that is a SQLite transaction left holding its lock, or a journal line half written:
the same process's next writes, which record the interrupted trial, then wait on a lock nobody
will release ("database is locked", then a traceback). Writes run inside ``deferred_interrupts``:
a signal that arrives there is held and raised as soon as the write is done.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_DEFERRED = (signal.SIGINT, signal.SIGTERM)


class _Held(threading.local):
    active = False  # inside a deferring block already (blocks nest)


_held = _Held()


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the block runs, then deliver them to their usual handlers.

    Only handlers that are Python callables are deferred (the default Ctrl-C handler, a worker's
    SIGTERM relay); ignored or default-action signals keep their behaviour. Outside the main
    thread (where Python runs signal handlers) and when nested, it does nothing."""
    if threading.current_thread() is not threading.main_thread() or _held.active:
        yield
        return
    received: list[int] = []
    previous = {}
    for signum in _DEFERRED:
        handler = signal.getsignal(signum)
        if callable(handler):
            previous[signum] = handler
            signal.signal(signum, lambda s, _frame: received.append(s))
    _held.active = True
    try:
        yield
    finally:
        _held.active = False
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            previous[signum](signum, None)  # raises KeyboardInterrupt for the usual handlers


def install_terminate_handler() -> None:
    """Make SIGTERM (``kill``, a job scheduler's stop) interrupt this process as Ctrl-C does,
    once. Its default action ended the sweep's main process on the spot: its worker processes
    went on training as orphans, and its own running trial was left RUNNING until a later run
    found it stale. Only where SIGTERM still has its default action (an embedding program's
    handler is kept) and in the main thread."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
        signal.signal(signal.SIGTERM, interrupt_once)


class Terminated(KeyboardInterrupt):
    """The KeyboardInterrupt a SIGTERM raises: handled as Ctrl-C is, but the process exits
    with SIGTERM's status (143), so a job scheduler sees a stop, not a user's Ctrl-C."""


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """The shell's status for a process ended by this signal: 128 + its number."""
    signum = signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT
    return 128 + int(signum)


def interrupt_once(signum: int, frame: Any) -> None:
    """A SIGTERM handler: the first one raises ``Terminated``, later ones are ignored, so a
    second signal cannot cut the recording of the interrupted trial."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


# SIGUSR1 drains a sweep: the trials running now finish and are recorded, no process claims
# another, and no sequential stage starts. For a job scheduler's (or a lease's) deadline, where
# Ctrl-C would throw away the running trials' work. POSIX only.
DRAIN_SIGNAL = getattr(signal, "SIGUSR1", None)
_drain = threading.Event()


def install_drain_handler() -> None:
    """Make SIGUSR1 drain this process instead of killing it (its default action)."""
    if DRAIN_SIGNAL is not None and threading.current_thread() is threading.main_thread():
        signal.signal(DRAIN_SIGNAL, lambda _s, _frame: _drain.set())


def draining() -> bool:
    return _drain.is_set()

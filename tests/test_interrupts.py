"""A Ctrl-C (or a worker's relayed SIGTERM) that lands inside a database write is held until the
write is done: a write cut in half left SQLite locked for the writes that record the interrupted
trial (seen as "database is locked" and a traceback after Ctrl-C in tests/test_scaleout.py)."""
from __future__ import annotations

import os
import signal

import pytest

from mvlab.study.interrupts import deferred_interrupts
from mvlab.study.worker import _interrupt_once


def test_ctrl_c_inside_a_write_waits_for_its_end():
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            finished.append("the write")
    assert finished == ["the write"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_workers_sigterm_relay_is_held_too_and_nested_blocks_deliver_once():
    previous = signal.signal(signal.SIGTERM, _interrupt_once)
    finished = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with deferred_interrupts():
                with deferred_interrupts():
                    os.kill(os.getpid(), signal.SIGTERM)
                    finished.append("inner")
                finished.append("outer")
        assert finished == ["inner", "outer"]
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # the relay fires once only
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_ignored_signals_stay_ignored_and_a_quiet_block_raises_nothing():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    with deferred_interrupts():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

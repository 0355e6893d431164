"""A Ctrl-C (or a worker's relayed SIGTERM) that lands inside a database write is held until the
write is done: a write cut in half left SQLite locked for the writes that record the interrupted
trial (seen as "database is locked" and a traceback after Ctrl-C in tests/test_scaleout.py)."""
from __future__ import annotations

import os
import signal

import pytest

from mvlab.study.interrupts import Terminated, deferred_interrupts, exit_status, interrupt_once


@pytest.fixture(autouse=True)
def python_ctrl_c():
    # Python's own Ctrl-C handler, whatever the test run inherited: a shell starts a background
    # job (`make test &`, nohup) with SIGINT ignored, and these tests are about the handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_inside_a_write_waits_for_its_end():
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            finished.append("the write")
    assert finished == ["the write"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_workers_sigterm_relay_is_held_too_and_nested_blocks_deliver_once():
    previous = signal.signal(signal.SIGTERM, interrupt_once)
    finished = []
    try:
        with pytest.raises(Terminated) as caught:
            with deferred_interrupts():
                with deferred_interrupts():
                    os.kill(os.getpid(), signal.SIGTERM)
                    finished.append("inner")
                finished.append("outer")
        assert finished == ["inner", "outer"]
        assert exit_status(caught.value) == 143  # 128 + SIGTERM: a scheduler's stop, not Ctrl-C
        assert exit_status(KeyboardInterrupt()) == 130
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


DRAIN_STUDY = """\
name: drain
model: tiny
data: {{dataset: builtin, resolution: 16, per_class: 400, val_per_class: 5,
        heldout_fraction: 0.25}}
train: {{epochs: 3, batch_size: 8, warmup_epochs: 0, device: cpu, threads: 1}}
study: {{kind: grid, seeds: [0, 1, 2]}}
space: {{pattern: [last_half, attn_only]}}
bench: {{batch_size: 4, warmup: 1, steps: 1, repeats: 1}}
tracking: {{uri: "sqlite:///{root}/mlflow.db"}}
workdir: "{root}/study"
"""


@pytest.mark.slow  # about 40 s
@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="SIGUSR1 is POSIX")
def test_sigusr1_drains_a_sweep_its_running_trials_finish_and_no_more_start(tmp_path):
    import subprocess
    import sys
    import time

    from mvlab.study import load_study
    from mvlab.study.locations import storage_url_for
    from mvlab.study.preparation import open_study

    study = tmp_path / "drain.yaml"
    study.write_text(DRAIN_STUDY.format(root=tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "mvlab", "sweep", str(study), "--workers", "2",
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    config = load_study(study)
    deadline = time.time() + 120
    while time.time() < deadline:  # until both workers train
        time.sleep(0.5)
        if (tmp_path / "study" / "optuna.journal").exists():
            trials = open_study(config, storage_url_for(config), create=False).get_trials()
            if sum(t.state.name == "RUNNING" for t in trials) == 2:
                break
    os.killpg(proc.pid, signal.SIGUSR1)  # the whole group, as a scheduler would
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "drained (SIGUSR1)" in out, out[-3000:]
    states = [t.state.name for t in open_study(config, storage_url_for(config),
                                               create=False).get_trials()]
    assert states.count("COMPLETE") == 2 and "FAIL" not in states, states  # the two running
    assert states.count("WAITING") == 4, states  # queued, for a rerun

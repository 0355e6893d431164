"""``mvlab sweep``: prepare the study once, run trials in one or N worker processes, summarise.

Separate, rerunnable steps (as pycls does it), one module each: ``preparation.prepare``
creates or resumes the Optuna study, fails stale RUNNING trials, queues the grid/population
points that have no live trial yet, creates the MLflow database and opens the parent run;
``worker.work`` claims and runs trials until the study (or ``--n-trials``) is done;
``finalize`` (here) writes the Pareto table, plot and trials table to the parent run;
``display`` shows the progress; with ``study.sequential``, ``sequential.queue_next_seeds`` adds
seeds to undetermined comparisons and the workers run again. Rerunning the same command resumes: finished trials are never
redone."""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import optuna

from mvlab.errors import StudyError
from mvlab.study import tracking
from mvlab.study.display import Display
from mvlab.study.interrupts import draining, install_drain_handler
from mvlab.study.preparation import counts, prepare
from mvlab.study.sequential import Stage, queue_next_seeds
from mvlab.study.types import Prepared, StudyConfig, SweepOptions, SweepSummary
from mvlab.study.worker import _worker_main, follow_trials, stop_followers, work

__all__ = ["run_sweep", "finalize"]


_DEFAULT_OPTIONS = SweepOptions()


def run_sweep(config: StudyConfig, options: SweepOptions = _DEFAULT_OPTIONS,
              argv: list[str] | None = None) -> SweepSummary | None:
    """Prepare, run (in-process for one worker, N processes otherwise) and finalize.

    Under ``torchrun --nproc_per_node K`` every trial trains data-parallel on K processes: rank
    0 is the sweep's one worker (storage, MLflow, benchmark) and sends each trial's plan to the
    other ranks, which only train; they return None."""
    if options.workers < 1:
        raise StudyError(f"--workers {options.workers}: needs at least 1")
    most = 4 * (os.cpu_count() or 1)  # each worker is a process with its own torch
    if options.workers > max(8, most):
        raise StudyError(f"--workers {options.workers}: at most {max(8, most)} on this host "
                         f"(4 per core); start sweeps on more hosts instead")
    if options.n_trials is not None and options.n_trials < 1:
        raise StudyError(f"--n-trials {options.n_trials}: needs at least 1 (or leave it out to "
                         f"run the whole study)")
    install_drain_handler()  # SIGUSR1: finish the running trials, start no more
    from mvlab.training import ddp

    if ddp.launched_world_size() > 1:
        if options.workers != 1:
            raise StudyError(f"--workers {options.workers} under torchrun: each trial already "
                             f"uses every torchrun process; drop --workers (start more "
                             f"torchrun sweeps to run trials side by side)")
        from mvlab.training.runtime import resolve_device

        ranks, _ = ddp.setup(resolve_device(config.train.device))
        if ranks is not None and not ranks.is_main:
            follow_trials(ranks)
            return None
    prepared, study = prepare(config, options, argv)
    display = Display(config, study, prepared, options.progress)
    status = "FAILED"
    try:
        while True:
            if options.workers == 1:
                budget = _counter(options.n_trials)
                work(prepared, budget, display.progress())
            else:
                _run_processes(prepared, options, display)
            if draining():
                display.bar.write(f"sweep {config.name}: drained (SIGUSR1): the running trials "
                                  f"finished, the rest stay queued; rerun to resume")
                break
            # --n-trials is a budget for this invocation: the next stage waits for a rerun.
            if config.sequential is None or options.n_trials is not None:
                break
            stage = _next_stage(study, prepared)
            if not stage.queued:
                display.bar.write(f"sweep {config.name}: no more seeds: {stage.why}")
                break
            display.more(stage.queued, "seeds added to the comparisons still undetermined")
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        display.close()
        if status != "KILLED":  # on Ctrl-C torchrun interrupts every rank itself
            stop_followers()
        summary = finalize(prepared, study, status)
    return summary


def _next_stage(study: optuna.Study, prepared: Prepared) -> Stage:
    """The next sequential stage; a failure to decide leaves the finished trials as they are."""
    try:
        return queue_next_seeds(study, prepared)
    except Exception as exc:  # noqa: BLE001 - the trials are safe in storage; say so, go on
        return Stage(0, f"could not decide ({type(exc).__name__}: {exc}); rerun the sweep to "
                        "try again, `mvlab report` to see the verdicts")


def _counter(n: int | None) -> Any:
    if n is None:
        return None
    value = mp.get_context("spawn").Value("i", n)
    return value


def _run_processes(prepared: Prepared, options: SweepOptions, display: Display) -> None:
    context = mp.get_context("spawn")  # no fork: torch and sqlite handles do not survive it
    budget = context.Value("i", options.n_trials if options.n_trials is not None else 1 << 30)
    threads = max(1, (os.cpu_count() or 1) // options.workers)
    procs = [context.Process(target=_worker_main, args=(prepared, budget, threads),
                             name=f"mvlab-sweep-worker-{i}", daemon=False)
             for i in range(options.workers)]
    for proc in procs:
        proc.start()
    try:
        while any(p.is_alive() for p in procs):
            display.poll()
            time.sleep(1.0)
    except KeyboardInterrupt:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(timeout=60)
        raise
    finally:
        for proc in procs:
            proc.join()
    for proc in procs:
        if proc.exitcode not in (0, None):
            how = (f"killed by signal {-proc.exitcode}" if proc.exitcode < 0
                   else f"exit status {proc.exitcode}")
            display.bar.write(f"mvlab sweep: warning: {proc.name} died ({how}); its trial is "
                              f"marked failed and queued again on the next run", file=sys.stderr)
    display.poll()


# -------------------------------------------------------------------------------- finalize
def finalize(prepared: Prepared, study: optuna.Study, status: str) -> SweepSummary:
    """Pareto table (CSV), Pareto plot (PNG) and the full trials table -> the parent run."""
    from mvlab.study import report

    config = prepared.config
    uri, parent = prepared.target.uri, prepared.target.parent_run_id or ""
    totals = counts(study)
    written: list[Path] = []
    if status == "KILLED":  # interrupted: close the run and get out; `mvlab report` rebuilds
        tracking.end_run(uri, parent, status)
        return SweepSummary(config.name, prepared.storage_url, uri, parent, totals, [], [],
                            prepared.target.experiment_id)
    try:
        written = report.write_sweep_artifacts(study, prepared.storage_url,
                                               config.workdir / "sweep")
        tracking.log_artifacts(uri, parent, written)
        tracking.log_parent_metrics(uri, parent,
                                    {f"trials_{k.lower()}": v for k, v in totals.items()})
    except Exception as exc:  # noqa: BLE001 - the trials are safe in storage; say so, go on
        print(f"mvlab sweep: warning: could not write the sweep summary ({type(exc).__name__}: "
              f"{exc}); rebuild it with `mvlab report {config.source}`", file=sys.stderr)
        status = "FAILED" if status == "FINISHED" else status
    tracking.end_run(uri, parent, status)
    pareto = report.pareto_records(study, config)
    return SweepSummary(config.name, prepared.storage_url, prepared.target.uri,
                        prepared.target.parent_run_id or "", totals, pareto, written,
                        prepared.target.experiment_id)


"""``mvlab sweep FILE``: run (or resume) the study a YAML file describes."""
from __future__ import annotations

import argparse
import sys

from mvlab import records

DESCRIPTION = """\
Run the study in FILE: train every grid point / sampled model / optimiser trial on the proxy,
measure throughput first (cheap, so infeasible models are rejected before training), record
everything in Optuna and MLflow, and write the Pareto table and plot to the sweep's parent run.

Rerunning the same command resumes the study: finished trials are kept, trials left RUNNING by
a killed process are marked failed and (for grids and populations) queued again.

Storage defaults to studies/<name>/optuna.journal (several workers on one host are fine);
MLflow to sqlite:///studies/<name>/mlflow.db. See docs/studies.md."""

EPILOG = """\
examples:
  mvlab sweep experiments/hybrid_patterns.yaml
  mvlab sweep experiments/hybrid_patterns.yaml --set train.epochs=1 --n-trials 2
  mvlab sweep experiments/hybrid_patterns.yaml --workers 2
  mvlab sweep experiments/hybrid_patterns.yaml --set data.dataset=folder data.root=/data/imagenet \\
      data.classes=imagenet100 train.device=cuda bench.device=cuda
  mvlab sweep experiments/design_space.yaml --storage postgresql://user@db-host/mvlab"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="run or resume a study (grid, population or optimisation)",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", metavar="FILE", help="the study YAML (see experiments/)")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        action="extend",
                        help="override study keys, e.g. train.epochs=30 data.root=/data/in "
                             "'space.pattern=[last_half, attn_only]'")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes on this host sharing the study (default 1)")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage: a .journal file, sqlite:///FILE (one worker) or "
                             "postgresql://user@host/db (several hosts); overrides the file's")
    parser.add_argument("--n-trials", type=int, metavar="K",
                        help="run at most K trials in this invocation (the rest stay queued)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="queue again the grid/population points whose trial failed")
    parser.add_argument("--check", action="store_true",
                        help="validate the file and print the plan; train nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from mvlab.safety import mask_url
    from mvlab.study.plan import describe_plan, early_stop_warnings
    from mvlab.study.schema import load_study
    from mvlab.study.tokens import few_token_warnings
    from mvlab.study.types import SweepOptions

    config = load_study(args.file, args.overrides)
    for line in [*few_token_warnings(config), *early_stop_warnings(config)]:
        print(f"mvlab sweep: warning: {line}", file=sys.stderr)
    if args.check:
        from mvlab.study.tracking import check_locations

        check_locations(config, args.storage)  # the storage and MLflow checks the sweep makes
        print(describe_plan(config, args.storage))
        return 0
    from mvlab.study.interrupts import exit_status, install_terminate_handler
    from mvlab.study.runner import run_sweep  # torch, Optuna and MLflow: only to run it

    install_terminate_handler()  # the process is ours: SIGTERM stops it as Ctrl-C does
    options = SweepOptions(workers=args.workers, storage=args.storage, n_trials=args.n_trials,
                           retry_failed=args.retry_failed, progress=not args.no_progress)
    try:
        summary = run_sweep(config, options)
    except KeyboardInterrupt as interrupt:
        print("mvlab sweep: interrupted: the running trial is recorded as failed (interrupted) "
              "and queued again; run the same command to resume", file=sys.stderr)
        return exit_status(interrupt)
    if summary is None:  # a torchrun rank other than 0: it trained, rank 0 reports
        return 0
    states = ", ".join(f"{k.lower()} {v}" for k, v in summary.counts.items() if v)
    print(f"study {summary.study}: {states}")
    print(f"Pareto front ({len(summary.pareto)} trials):")
    for row in summary.pareto:
        values = ", ".join(f"{k}={_number(row[k])}" for k in config.objective_names)
        keys = [*(d.key for d in config.space), records.SEED_PARAM]
        knobs = " ".join(f"{k}={row[k]}" for k in dict.fromkeys(keys) if k in row)
        print(f"  #{row[records.TRIAL]}: {values}  {knobs}")
    print(f"storage: {mask_url(summary.storage_url)}")
    print_next_steps(args.file, args.storage and mask_url(args.storage),
                     mask_url(summary.tracking_uri), summary.parent_run_id,
                     summary.experiment_id, args.overrides)
    return 0


def _number(value: float) -> str:
    """An objective, two decimals throughout (73.00 next to 73.83, not 73); counts such as
    params or MACs whole, with thousands separators."""
    value = float(value)
    return f"{value:,.0f}" if value.is_integer() and abs(value) >= 1000 else f"{value:.2f}"


def print_next_steps(study_file: str, storage: str | None, tracking_uri: str,
                     parent_run_id: str, experiment_id: str, overrides: list[str] = ()) -> None:
    """Where to look next, as commands that work as printed (``.venv/bin/...`` after
    ``make``; the sweep's own ``--set``, which may rename the study or move its folder) and the
    MLflow page that compares the trials."""
    import shlex

    from mvlab.commands import printed
    from mvlab.safety import mask_credentials
    from mvlab.study.tracking import trials_view_url

    mvlab, study = printed.program("mvlab"), shlex.quote(study_file)
    ui = printed.mlflow_ui(tracking_uri)
    print(f"mlflow:  {tracking_uri} (parent run {parent_run_id})")
    if ui:
        print(f"  serve:  {ui}")
    print(f"  trials: {trials_view_url(printed.mlflow_server(tracking_uri), experiment_id)}")
    where = f" --storage {shlex.quote(storage)}" if storage else ""
    if overrides:  # last: --set takes every word after it
        where += " --set " + " ".join(shlex.quote(mask_credentials(o)) for o in overrides)
    print(f"optuna:  {mvlab} dashboard {study}{where}   # live Pareto front, "
          f"http://127.0.0.1:8080")
    print(f"report:  {mvlab} report {study}{where}")

"""``mvlab report STUDY``: rebuild a study's statistics, tables and plots (no training)."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from mvlab.records import THROUGHPUT

DESCRIPTION = """\
Rebuild a study's report from its Optuna storage without retraining anything: per fidelity,
every configuration against the study's reference (paired over seeds, Holm-adjusted, TOST
equivalence: better / worse / equivalent / undetermined), the ordered hypothesis (Page's L),
split-half reliability of the ranking, the Pareto front over configuration means, per-choice
summaries and EDFs, rank agreement across fidelities, and the failed/pruned trials, joined
together in README.md.

The report goes into the study's own folder (studies/<name>/report/, beside its journal) or
the --out folder given; the project's committed results/ change only when --out names them.

STUDY is the study's YAML file (its storage and analysis settings are read the way `mvlab
sweep` reads them) or a study name, read from studies/<name>/optuna.journal unless --storage
says otherwise. --trials rebuilds from a trials.csv an earlier report wrote (a study whose
storage is gone; needs the YAML for the objectives)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="rebuild a study's verdicts, Pareto front, tables and plots",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", metavar="STUDY", help="study YAML file or study name")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], action="extend",
                        metavar="KEY=VALUE", help="the overrides the sweep ran with (name, "
                                                  "storage, workdir, analysis.*)")
    parser.add_argument("--storage", metavar="URL", help="Optuna storage of the study")
    parser.add_argument("--out", metavar="DIR",
                        help="output folder (default: the study's folder + /report)")
    parser.add_argument("--trials", metavar="CSV",
                        help="read the trials from this trials.csv instead of the storage")
    parser.add_argument("--throughput", metavar="CSV",
                        help="throughput per network from a separate measurement (columns spec "
                             "and --throughput-column), instead of the sweep's own")
    parser.add_argument("--throughput-column", default=THROUGHPUT, metavar="NAME",
                        help="the column of --throughput to use (default %(default)s)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from mvlab import records
    from mvlab.errors import StudyError
    from mvlab.study.locations import default_storage_url, default_workdir, storage_url_for
    from mvlab.study.report import analyse, build_report, write_report

    config = None
    if args.study.endswith((".yaml", ".yml")) or Path(args.study).is_file():
        from mvlab.study.schema import load_study

        config = load_study(args.study, args.overrides)
        name, storage = config.name, storage_url_for(config, args.storage)
        workdir = Path(config.workdir)
    else:
        name = args.study
        workdir = Path(default_workdir(name))
        storage = args.storage or default_storage_url(workdir)
    out = Path(args.out) if args.out else workdir / "report"
    settings = dataclasses.asdict(config.analysis) if config is not None else None
    if args.trials:
        if config is None:
            raise StudyError(f"--trials {args.trials}: give the study's YAML file as STUDY (its "
                             "objectives and analysis settings are not in the CSV)")
        from mvlab.study.report import table_from_csv

        table = table_from_csv(args.trials, dict(config.objectives))
        table.attrs["study"] = name
        analysis = analyse(table, dict(config.objectives), settings, args.throughput,
                           args.throughput_column)
        written = write_report(analysis, out, f"`{args.trials}`")
    else:
        # A journal named journal:PATH is checked at PATH: opening a missing one would create
        # it, and the error would then be "no study named ..." in an empty file.
        journal = records.journal_path(storage)
        local = journal if journal is not None else None if "://" in storage else Path(storage)
        if local is not None and not local.exists():
            raise StudyError(f"{storage}: no such study storage; run `mvlab sweep` first or "
                             f"pass --storage URL")
        # Opened as the sweep opens it: the same driver, one-line errors, a torn journal
        # repaired (and a file that is not a journal one line, not a JSONDecodeError).
        if "://" in storage or journal is not None:
            from mvlab.study.storage import open_storage

            storage = open_storage(storage)
        written = build_report(name, storage, out, settings=settings,
                               throughput=args.throughput,
                               throughput_column=args.throughput_column)
    print(f"wrote {len(written)} files to {out}/:")
    for path in written:
        print(f"  {path}")
    for path in written:
        if path.name.startswith("configurations") and path.suffix == ".csv":
            from mvlab.study.report import plateau_line

            line = plateau_line(path)
            if line:
                print(line)
    for path in written:
        if path.name.startswith("gate") and path.suffix == ".csv":
            from mvlab.study.gate import outcome_line

            print(outcome_line(path))
    return 0

"""``mvlab report STUDY``: rebuild a study's tables and plots from storage (no training)."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Rebuild the tables and plots of a study from its Optuna storage into results/<study>/ without
retraining anything: the Pareto front (CSV + PNG), accuracy and throughput per design choice
with seed spread, the seed spread of repeated configurations, and the failed/pruned trials with
their reasons, tied together in results/<study>/README.md.

STUDY is the study's YAML file (its storage is found the way `mvlab sweep` finds it) or a study
name, read from studies/<name>/optuna.journal unless --storage says otherwise."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="rebuild a study's Pareto front, tables and plots into results/",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", metavar="STUDY", help="study YAML file or study name")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], action="extend",
                        metavar="KEY=VALUE", help="the overrides the sweep ran with (name, "
                                                  "storage, workdir)")
    parser.add_argument("--storage", metavar="URL", help="Optuna storage of the study")
    parser.add_argument("--out", metavar="DIR", help="output folder (default results/<study>)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from mvlab.errors import StudyError
    from mvlab.study import build_report
    from mvlab.study.runner import storage_url_for

    if args.study.endswith((".yaml", ".yml")) or Path(args.study).is_file():
        from mvlab.study import load_study

        config = load_study(args.study, args.overrides)
        name, storage = config.name, storage_url_for(config, args.storage)
    else:
        name = args.study
        storage = args.storage or str(Path("studies") / name / "optuna.journal")
    if "://" not in storage and not Path(storage).exists():
        raise StudyError(f"{storage}: no such study storage; run `mvlab sweep` first or pass "
                         f"--storage URL")
    out = Path(args.out) if args.out else Path("results") / name
    written = build_report(name, storage, out)
    print(f"wrote {len(written)} files to {out}/:")
    for path in written:
        print(f"  {path}")
    return 0

"""``mvlab bench``: throughput of mvlab and timm models, appended to CSVs named by the settings.

``mvlab bench study FILE`` measures a study's configurations interleaved over rounds (its
throughput axis); ``mvlab bench scan ...`` is handed to the selective-scan benchmark
(``mvlab.ops.scan.bench``)."""
from __future__ import annotations

import argparse
import importlib
import sys

from mvlab.errors import UserError

# A user's location, never the checkout's committed results/: relative to the current
# directory, like the sweep's studies/ (both ignored by git in a checkout). Not ~/.cache: a
# measurement is a result to keep and find, not something to regenerate when deleted.
DEFAULT_OUT = "bench"

EPILOG = """examples:
  mvlab bench T convnext_tiny swin_tiny_patch4_window7_224 --precision fp16 --batch-size 128
  mvlab bench proxy tiny --img-size 64 --mode both --device cpu --steps 10 --repeats 3
  mvlab bench T --compile max-autotune --scan-backend triton
  mvlab bench study experiments/hybrid_patterns.yaml   # a study's throughput axis
  mvlab bench scan --help          # the selective-scan kernels (mvlab.ops.scan.bench)

Rows append to OUT/<mode>-<precision>-<nhwc|nchw>-<compile>-<clock>-pt<torch>-<cuda|cpu>-<device>.csv
(OUT: ./bench unless --out); every row carries its settings (device, versions, precision,
layout, compile mode, batch, size, scan backend, threads, clock), params and MACs, and images/s
as the median of --repeats runs with quartiles, min/max and wall time beside it. On a CPU the
clock is CPU time (thread CPU time with --threads 1), on a GPU wall time. See docs/training.md."""

STUDY_EPILOG = """Every distinct configuration (canonical spec) of a grid or population study
is built once, warmed up, then timed round by round in the same order (A B C A B C ...) with
the study's bench: settings (change them with --set bench.KEY=VALUE) except its steps: many
short rounds (--rounds, --steps) put a change of load on every configuration alike. One row per
configuration, keyed by spec, replaces OUT (default: the study's folder,
<workdir>/throughput.csv). Columns: see docs/training.md."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure inference/training throughput of mvlab and timm models",
        description="Throughput the timm way: synthetic input on the device, warm-up, a "
                    "synchronise at every step, a fixed batch, several timed repeats (median and "
                    "spread), and a retry at half the batch on out-of-memory.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_options(parser, suppress=False)
    # Everything from the first model name on is parsed again in handle(): this lets options
    # follow the names, and lets `mvlab bench scan ...` carry the scan benchmark's own options.
    parser.add_argument("targets", nargs=argparse.REMAINDER, metavar="MODEL ...",
                        help="mvlab presets (T, proxy, tiny, ...), spec strings or timm model "
                             "names; or 'scan' followed by the scan benchmark's arguments")
    parser.set_defaults(func=handle, bench_parser=parser)


def _add_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    def default(value):
        return argparse.SUPPRESS if suppress else value

    add = parser.add_argument
    add("--mode", choices=["infer", "train", "both"], default=default("infer"),
        help="inference (eval, no grad), training steps, or both (default: infer)")
    add("--batch-size", "-b", type=int, default=default(128), help="batch size (default: 128)")
    add("--img-size", type=int, default=default(224), help="input resolution (default: 224)")
    add("--precision", default=default("auto"),
        help="auto (bf16/fp16 autocast on GPU, fp32 on CPU), fp32, fp16 (amp) or bf16")
    add("--channels-last", dest="channels_last", action="store_true", default=default(None),
        help="NHWC memory layout (default: on for CUDA and CPU)")
    add("--no-channels-last", dest="channels_last", action="store_false", default=default(None),
        help="NCHW memory layout")
    add("--compile", default=default("none"),
        help="torch.compile mode: none (default), default, reduce-overhead, max-autotune")
    add("--device", default=default("auto"), help="auto (default), cpu, cuda, cuda:1 ...")
    add("--warmup", type=int, default=default(10), help="untimed steps first (default: 10)")
    add("--steps", type=int, default=default(40), help="timed steps per repeat (default: 40)")
    add("--repeats", type=int, default=default(5), help="timed repeats (default: 5)")
    add("--threads", type=int, default=default(None),
        help="CPU threads (default: torch's, one per core; 1 is often fastest on a busy machine)")
    add("--scan-backend", default=default("auto"), help="scan backend for mvlab models (default: auto)")
    add("--num-classes", type=int, default=default(1000), help="classifier size (default: 1000)")
    add("--clock", default=default("auto"), choices=["auto", "thread_cpu", "process_cpu", "wall"],
        help="auto (default): thread CPU time on a CPU with 1 thread, process CPU time with "
             "more, wall time on a GPU")
    add("--out", default=default(DEFAULT_OUT), help=f"CSV directory (default: ./{DEFAULT_OUT})")
    add("--no-save", action="store_true", default=default(False), help="print only, write no CSV")


def handle(args: argparse.Namespace) -> int:
    targets = list(args.targets or [])
    if targets and targets[0] == "scan":
        return _scan_bench(targets[1:])
    if targets and targets[0] == "study":
        return _study_bench(targets[1:])
    if "-h" in targets or "--help" in targets:
        args.bench_parser.print_help()
        return 0
    inner = argparse.ArgumentParser(prog="mvlab bench", add_help=False)
    _add_options(inner, suppress=True)
    inner.add_argument("models", nargs="+")
    if not targets:
        raise UserError("name at least one model, e.g. mvlab bench T convnext_tiny "
                        "(see mvlab bench --help)")
    args = inner.parse_args(targets, namespace=args)
    if not args.no_save:  # before measuring: a bad --out would lose the rows at the end
        from mvlab.safety import check_output_dir
        check_output_dir(args.out, "--out")

    from mvlab.training.bench import check_limits, format_table, run_benchmarks

    # Before the first model is built: a bad size is one line, not an error after a progress bar.
    check_limits({key: getattr(args, key) for key in ("mode", "batch_size", "img_size", "warmup",
                                                      "steps", "repeats", "num_classes",
                                                      "threads")}, options=True)
    modes = ("infer", "train") if args.mode == "both" else (args.mode,)
    rows = run_benchmarks(
        args.models, modes=modes, out_dir=None if args.no_save else args.out, progress=True,
        batch_size=args.batch_size, img_size=args.img_size, device=args.device,
        precision=args.precision, channels_last=args.channels_last, compile=args.compile,
        warmup=args.warmup, steps=args.steps, repeats=args.repeats,
        scan_backend=args.scan_backend, num_classes=args.num_classes, threads=args.threads,
        clock=args.clock)
    print(format_table(rows))
    print(describe_environment(rows[0]))
    if not args.no_save:
        from mvlab.training.bench import csv_name
        for path in sorted({csv_name(r) for r in rows}):
            print(f"appended to {args.out}/{path}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def describe_environment(row: dict) -> str:
    """Where a row was measured: the device by name (the CUDA version only for a GPU)."""
    where = f"{row['device_name']} ({row['device']}"
    where += f", {row['threads']} threads)" if row["device"] == "cpu" else ")"
    software = f"torch {row['torch']}"
    if str(row["device"]).startswith("cuda"):
        software += f"  cuda {row['cuda']}  cudnn {row['cudnn']}"
    return (f"device: {where}  {software}  clock={row['clock']}  "
            f"channels_last={row['channels_last']}  compile={row['compile']}")


def _study_bench(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mvlab bench study", description="A study's throughput axis: its distinct "
        "configurations measured interleaved over rounds.", epilog=STUDY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="study YAML (grid or population)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed rounds over all configurations (default: 50)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps of each configuration in a round (default: 2)")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override study keys, e.g. bench.batch_size=64 bench.threads=1")
    parser.add_argument("--out", default=None, metavar="CSV",
                        help="CSV to write (default: <study workdir>/throughput.csv)")
    args = parser.parse_args(argv)

    import os
    from pathlib import Path

    from mvlab.study import load_study
    from mvlab.study.measure import (
        STUDY_ROUNDS,
        STUDY_STEPS,
        study_columns,
        study_configurations,
        study_throughput,
    )
    from mvlab.training.bench import write_rows

    config = load_study(args.file, args.overrides)
    out = Path(args.out) if args.out else Path(config.workdir) / "throughput.csv"
    count = len(study_configurations(config))
    sizes = {k: v for k, v in (("rounds", args.rounds), ("steps", args.steps)) if v is not None}
    print(f"study {config.name}: {count} configurations x {sizes.get('rounds', STUDY_ROUNDS)} "
          f"rounds x {sizes.get('steps', STUDY_STEPS)} steps", flush=True)

    def on_round(done: int, rounds: int) -> None:
        print(f"round {done}/{rounds} (load {os.getloadavg()[0]:.2f})", flush=True)

    rows = study_throughput(config, on_round=on_round, **sizes)
    write_rows(out, rows, study_columns())
    width = max(len(r["points"]) for r in rows)
    for r in sorted(rows, key=lambda r: -float(r["img_s_median"])):
        spread = f"{100 * r['spread']:.1f}%" if r["status"] == "ok" else r["status"]
        print(f"  {r['points']:<{width}}  {r['img_s_median']:>9.1f} img/s  spread {spread}")
    print(describe_environment(rows[0]))
    print(f"wrote {out}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _scan_bench(argv: list[str]) -> int:
    """Hand over to the scan benchmark: ``mvlab.ops.scan.bench.main(argv) -> int``."""
    try:
        module = importlib.import_module("mvlab.ops.scan.bench")
    except ModuleNotFoundError as exc:
        if exc.name != "mvlab.ops.scan.bench":
            raise
        print("mvlab bench scan: the scan benchmark (mvlab.ops.scan.bench) is not installed",
              file=sys.stderr)
        return 2
    return int(module.main(argv) or 0)

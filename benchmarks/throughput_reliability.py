"""Is a study's throughput axis reliable on a loaded CPU? Measure it twice and compare.

Measures every distinct configuration of a study (default: experiments/hybrid_patterns.yaml)
with ``mvlab bench study``'s method and defaults (mvlab.study.measure.study_throughput:
configurations interleaved over many short rounds, the study's batch and resolution, CPU time
with one thread) in two passes,
while ``--load`` extra processes keep the cores busy, and prints

- the Kendall tau between the two passes' configuration medians (goal: >= 0.9),
- each configuration's spread over the rounds, (q3 - q1) / median and (max - min) / median
  (goal: <= 5 %),
- the same two numbers for wall time, measured beside it in the same steps.

    python benchmarks/throughput_reliability.py --out results/throughput

Writes OUT/pass1.csv and OUT/pass2.csv (``mvlab bench study``'s columns), OUT/summary.csv (one
row per configuration, both passes and both clocks side by side) and OUT/summary.json (tau,
goals, load averages, settings).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TAU_GOAL = 0.9
SPREAD_GOAL = 0.05

# One loader: a single-threaded torch loop of convolutions and matrix products, the kind of work
# another training job puts on a core (compute and cache traffic, not just a spinning loop).
LOADER = """
import torch
torch.set_num_threads(1)
x = torch.randn(16, 32, 48, 48)
conv = torch.nn.Conv2d(32, 32, 3, padding=1)
a = torch.randn(384, 384)
with torch.no_grad():
    while True:
        conv(x)
        a = (a @ a).tanh_()
"""


def start_load(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", LOADER], stdout=subprocess.DEVNULL,
                             start_new_session=True) for _ in range(n)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=30)


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def spread_of(values: list[float]) -> tuple[float, float]:
    """(q3 - q1) / median and (max - min) / median."""
    ordered = sorted(values)
    q1, median, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return (q3 - q1) / median, (ordered[-1] - ordered[0]) / median


def per_round(row: dict, column: str) -> list[float]:
    return [float(v) for v in str(row[column]).split(";")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=ROOT / "experiments/hybrid_patterns.yaml")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds (default: mvlab bench study's, STUDY_ROUNDS)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per configuration and round (default: STUDY_STEPS)")
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2,
                        help="loader processes running alongside (default: one per core)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSVs and JSON")
    args = parser.parse_args()

    from scipy.stats import kendalltau

    from mvlab.bench import write_rows
    from mvlab.study import load_study
    from mvlab.study.measure import study_columns, study_throughput

    config = load_study(args.study)
    sizes = {k: v for k, v in (("rounds", args.rounds), ("steps", args.steps)) if v is not None}
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    loads = {"before": load_avg()}
    loaders = start_load(args.load)
    passes = []
    try:
        time.sleep(2)  # let the loaders reach their loop
        for index in (1, 2):
            def on_round(done: int, rounds: int, index: int = index) -> None:
                print(f"pass {index} round {done}/{rounds}  load {load_avg()}  "
                      f"{time.time() - started:.0f} s", flush=True)
            rows = study_throughput(config, on_round=on_round, **sizes)
            write_rows(args.out / f"pass{index}.csv", rows, study_columns())
            passes.append(rows)
            loads[f"after_pass{index}"] = load_avg()
    finally:
        stop_load(loaders)

    first, second = passes
    summary = []
    for a, b in zip(first, second, strict=True):
        entry = {"points": a["points"]}
        for name, row in (("pass1", a), ("pass2", b)):
            cpu_iqr, cpu_range = spread_of(per_round(row, "img_s_repeats"))
            wall_iqr, wall_range = spread_of(per_round(row, "wall_img_s_repeats"))
            entry.update({f"{name}_img_s": row["img_s_median"], f"{name}_spread": round(cpu_iqr, 4),
                          f"{name}_spread_range": round(cpu_range, 4),
                          f"{name}_wall_img_s": row["wall_img_s_median"],
                          f"{name}_wall_spread": round(wall_iqr, 4),
                          f"{name}_wall_spread_range": round(wall_range, 4)})
        entry["pass2_over_pass1"] = round(b["img_s_median"] / a["img_s_median"], 4)
        entry["spec"] = a["spec"]
        summary.append(entry)
    write_rows(args.out / "summary.csv", summary, list(summary[0]))

    def tau(column: str) -> float:
        return float(kendalltau([e[f"pass1_{column}"] for e in summary],
                                [e[f"pass2_{column}"] for e in summary]).statistic)

    spreads = [e[f"pass{i}_spread"] for e in summary for i in (1, 2)]
    ranges = [e[f"pass{i}_spread_range"] for e in summary for i in (1, 2)]
    wall_spreads = [e[f"pass{i}_wall_spread"] for e in summary for i in (1, 2)]
    result = {
        "study": config.name, "configurations": len(summary), "rounds": first[0]["repeats"],
        "steps": first[0]["steps"], "batch_size": first[0]["batch_size"],
        "img_size": first[0]["img_size"], "threads": first[0]["threads"],
        "clock": first[0]["clock"], "device_name": first[0]["device_name"],
        "loaders": args.load, "load_avg": loads, "seconds": round(time.time() - started),
        "kendall_tau_cpu": round(tau("img_s"), 4), "kendall_tau_wall": round(tau("wall_img_s"), 4),
        "spread_max": max(spreads), "spread_median": statistics.median(spreads),
        "spread_range_max": max(ranges), "wall_spread_max": max(wall_spreads),
        "wall_spread_median": statistics.median(wall_spreads),
        "max_pass_ratio_deviation": round(max(abs(e["pass2_over_pass1"] - 1) for e in summary), 4),
    }
    result["goal_tau"] = result["kendall_tau_cpu"] >= TAU_GOAL
    result["goal_spread"] = result["spread_max"] <= SPREAD_GOAL
    (args.out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")

    width = max(len(e["points"]) for e in summary)
    print(f"\n{'configuration':<{width}}  {'cpu img/s p1':>12} {'p2':>8} {'spread p1':>9} "
          f"{'p2':>6}   {'wall img/s p1':>13} {'p2':>8} {'spread p1':>9} {'p2':>6}")
    for e in sorted(summary, key=lambda e: -e["pass1_img_s"]):
        print(f"{e['points']:<{width}}  {e['pass1_img_s']:>12.1f} {e['pass2_img_s']:>8.1f} "
              f"{100 * e['pass1_spread']:>8.1f}% {100 * e['pass2_spread']:>5.1f}%   "
              f"{e['pass1_wall_img_s']:>13.1f} {e['pass2_wall_img_s']:>8.1f} "
              f"{100 * e['pass1_wall_spread']:>8.1f}% {100 * e['pass2_wall_spread']:>5.1f}%")
    print(f"\nKendall tau between passes: {result['kendall_tau_cpu']:.3f} on {result['clock']} "
          f"(goal >= {TAU_GOAL}: {'met' if result['goal_tau'] else 'MISSED'}), "
          f"{result['kendall_tau_wall']:.3f} on wall time")
    print(f"spread (q3-q1)/median: max {100 * result['spread_max']:.1f} %, median "
          f"{100 * result['spread_median']:.1f} % (goal <= {100 * SPREAD_GOAL:.0f} %: "
          f"{'met' if result['goal_spread'] else 'MISSED'}); (max-min)/median max "
          f"{100 * result['spread_range_max']:.1f} %; wall time: max "
          f"{100 * result['wall_spread_max']:.1f} %, median {100 * result['wall_spread_median']:.1f} %")
    print(f"load average before/after: {loads}; {result['seconds']} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

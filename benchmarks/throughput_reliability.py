"""Is a study's throughput axis reliable on a loaded CPU? Measure it twice and compare.

Measures every distinct configuration of a study (default: experiments/hybrid_patterns.yaml)
with ``mvlab bench study``'s method and defaults (mvlab.study.measure.study_throughput:
configurations interleaved over many short rounds, the study's batch and resolution, CPU time
with one thread) in two passes,
while ``--load`` extra processes keep the cores busy, and prints

- the Kendall tau between the two passes' configuration medians (goal: >= 0.9),
- each configuration's spread over the rounds, (q3 - q1) / median and (max - min) / median
  (goal: <= 5 %),
- the same two numbers for wall time, measured beside it in the same steps,
- what the noise allows: how many pairs whose 95 % intervals separate in one pass keep their
  order in the other, the same tau and spread with each round's common load factor divided out
  (rounds as blocks), and how many rounds a pass would need for tau >= 0.9 at the measured
  per-round noise and gaps between configurations (a simulation).

    python benchmarks/throughput_reliability.py --out results/throughput

Writes OUT/pass1.csv and OUT/pass2.csv (``mvlab bench study``'s columns), OUT/summary.csv (one
row per configuration, both passes and both clocks side by side) and OUT/summary.json (tau,
goals, load averages, settings); ``--from-passes`` recomputes the last two from the first two.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
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
    parser.add_argument("--from-passes", action="store_true",
                        help="measure nothing: summarise OUT/pass1.csv and OUT/pass2.csv again")
    args = parser.parse_args()

    if args.from_passes:
        first, second = (read_rows(args.out / f"pass{i}.csv") for i in (1, 2))
        previous = json.loads((args.out / "summary.json").read_text())
        context = {k: previous[k] for k in ("loaders", "load_avg", "seconds")}
    else:
        first, second, context = measure(args)
    summarise(first, second, context, args.out)
    return 0


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["img_s_median"] = float(row["img_s_median"])
        row["wall_img_s_median"] = float(row["wall_img_s_median"])
    return rows


def measure(args: argparse.Namespace) -> tuple[list[dict], list[dict], dict]:
    from mvlab.study import load_study
    from mvlab.study.measure import study_columns, study_throughput
    from mvlab.training.bench import write_rows

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
    context = {"loaders": args.load, "load_avg": loads, "seconds": round(time.time() - started)}
    return passes[0], passes[1], context


def summarise(first: list[dict], second: list[dict], context: dict, out: Path) -> None:
    from scipy.stats import kendalltau, spearmanr

    from mvlab.training.bench import median_ci, write_rows

    summary = []
    for a, b in zip(first, second, strict=True):
        entry = {"points": a["points"]}
        for name, row in (("pass1", a), ("pass2", b)):
            rates = per_round(row, "img_s_repeats")
            cpu_iqr, cpu_range = spread_of(rates)
            wall_iqr, wall_range = spread_of(per_round(row, "wall_img_s_repeats"))
            low, high = median_ci(rates)
            entry.update({f"{name}_img_s": row["img_s_median"], f"{name}_spread": round(cpu_iqr, 4),
                          f"{name}_spread_range": round(cpu_range, 4),
                          f"{name}_ci_halfwidth": round((high - low) / 2 / row["img_s_median"], 4),
                          f"{name}_wall_img_s": row["wall_img_s_median"],
                          f"{name}_wall_spread": round(wall_iqr, 4),
                          f"{name}_wall_spread_range": round(wall_range, 4)})
        entry["pass2_over_pass1"] = round(b["img_s_median"] / a["img_s_median"], 4)
        entry["spec"] = a["spec"]
        summary.append(entry)
    # The load differs between the passes and moves every configuration alike: what is left after
    # dividing by the median ratio is what would reorder them.
    shift = statistics.median(e["pass2_over_pass1"] for e in summary)
    for e in summary:
        e["pass_deviation"] = round(e["pass2_over_pass1"] / shift - 1, 4)
    write_rows(out / "summary.csv", summary, list(summary[0]))

    def both(column: str) -> tuple[list[float], list[float]]:
        return [e[f"pass1_{column}"] for e in summary], [e[f"pass2_{column}"] for e in summary]

    spreads = [e[f"pass{i}_spread"] for e in summary for i in (1, 2)]
    ranges = [e[f"pass{i}_spread_range"] for e in summary for i in (1, 2)]
    halfwidths = [e[f"pass{i}_ci_halfwidth"] for e in summary for i in (1, 2)]
    wall_spreads = [e[f"pass{i}_wall_spread"] for e in summary for i in (1, 2)]
    deviations = [abs(e["pass_deviation"]) for e in summary]
    pooled = sorted((math.sqrt(e["pass1_img_s"] * e["pass2_img_s"]) for e in summary),
                    reverse=True)
    gaps = [1 - b / a for a, b in zip(pooled, pooled[1:], strict=False)]
    result = {
        "study": first[0]["study"], "configurations": len(summary),
        "rounds": int(first[0]["repeats"]), "steps": int(first[0]["steps"]),
        "batch_size": int(first[0]["batch_size"]), "img_size": int(first[0]["img_size"]),
        "threads": int(first[0]["threads"]), "clock": first[0]["clock"],
        "device_name": first[0]["device_name"], **context,
        "kendall_tau_cpu": round(float(kendalltau(*both("img_s")).statistic), 4),
        "kendall_tau_wall": round(float(kendalltau(*both("wall_img_s")).statistic), 4),
        "spearman_cpu": round(float(spearmanr(*both("img_s")).statistic), 4),
        "spread_max": max(spreads), "spread_median": statistics.median(spreads),
        "spread_range_max": max(ranges), "ci_halfwidth_max": max(halfwidths),
        "ci_halfwidth_median": statistics.median(halfwidths),
        "wall_spread_max": max(wall_spreads), "wall_spread_median": statistics.median(wall_spreads),
        "pass_shift": round(shift, 4), "pass_deviation_max": max(deviations),
        "pass_deviation_median": statistics.median(deviations),
        "neighbour_gap_median": round(statistics.median(gaps), 4),
    }
    result.update(noise_floor(first, second, summary))
    result["goal_tau"] = result["kendall_tau_cpu"] >= TAU_GOAL
    result["goal_spread"] = result["spread_max"] <= SPREAD_GOAL
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")

    width = max(len(e["points"]) for e in summary)
    print(f"\n{'configuration':<{width}}  {'cpu img/s p1':>12} {'p2':>8} {'spread p1':>9} "
          f"{'p2':>6} {'CI+-':>6}   {'wall img/s p1':>13} {'p2':>8} {'spread p1':>9} {'p2':>6}")
    for e in sorted(summary, key=lambda e: -e["pass1_img_s"]):
        print(f"{e['points']:<{width}}  {e['pass1_img_s']:>12.1f} {e['pass2_img_s']:>8.1f} "
              f"{100 * e['pass1_spread']:>8.1f}% {100 * e['pass2_spread']:>5.1f}% "
              f"{100 * e['pass1_ci_halfwidth']:>5.1f}%   "
              f"{e['pass1_wall_img_s']:>13.1f} {e['pass2_wall_img_s']:>8.1f} "
              f"{100 * e['pass1_wall_spread']:>8.1f}% {100 * e['pass2_wall_spread']:>5.1f}%")
    r = result
    print(f"\nKendall tau between passes: {r['kendall_tau_cpu']:.3f} on {r['clock']} "
          f"(goal >= {TAU_GOAL}: {'met' if r['goal_tau'] else 'MISSED'}), "
          f"{r['kendall_tau_wall']:.3f} on wall time; Spearman {r['spearman_cpu']:.3f}")
    print(f"spread of the rounds (q3-q1)/median: max {100 * r['spread_max']:.1f} %, median "
          f"{100 * r['spread_median']:.1f} % (goal <= {100 * SPREAD_GOAL:.0f} %: "
          f"{'met' if r['goal_spread'] else 'MISSED'}); (max-min)/median max "
          f"{100 * r['spread_range_max']:.1f} %; wall time: max {100 * r['wall_spread_max']:.1f} %, "
          f"median {100 * r['wall_spread_median']:.1f} %")
    print(f"95 % interval of a median: +-{100 * r['ci_halfwidth_median']:.1f} % (max "
          f"+-{100 * r['ci_halfwidth_max']:.1f} %); pass 2 / pass 1 = {r['pass_shift']:.3f} for "
          f"all alike, then within {100 * r['pass_deviation_max']:.1f} % (median "
          f"{100 * r['pass_deviation_median']:.1f} %); neighbours in the ranking are "
          f"{100 * r['neighbour_gap_median']:.1f} % apart (median)")
    print(f"pairs whose 95 % intervals separate in one pass: {r['resolved_pairs']} of "
          f"{r['pairs']}; {r['resolved_pairs_kept']} keep their order in the other pass")
    print(f"rounds as blocks (each round's median configuration divided out): tau "
          f"{r['kendall_tau_blocked']:.3f}, spread median {100 * r['blocked_spread_median']:.1f} %, "
          f"max {100 * r['blocked_spread_max']:.1f} %")
    print(f"per-round noise {100 * r['round_noise_sd']:.1f} % (robust sd, blocked): tau >= "
          f"{TAU_GOAL} in {', '.join(f'{100 * p:.0f} %' for p in r['p_goal_at_rounds'].values())} "
          f"of simulated repeats at {', '.join(r['p_goal_at_rounds'])} rounds a pass")
    print(f"load average: {r['load_avg']}; {r['seconds']} s; wrote {out}")


def blocked(rows: list[dict]) -> list[list[float]]:
    """Each configuration's per-round rates divided by that round's median over configurations.
    The configurations of a round run back to back, so a load change that slows the whole round
    cancels; what remains is each configuration's speed relative to the others."""
    rates = [per_round(row, "img_s_repeats") for row in rows]
    medians = [statistics.median(column) for column in zip(*rates, strict=True)]
    return [[v / m for v, m in zip(series, medians, strict=True)] for series in rates]


def noise_floor(first: list[dict], second: list[dict], summary: list[dict],
                rounds_grid: tuple[int, ...] = (50, 200, 800, 3200), repeats: int = 400) -> dict:
    """What the measured noise lets the axis resolve (see the module docstring)."""
    import random
    from itertools import combinations

    from scipy.stats import kendalltau

    from mvlab.training.bench import median_ci

    intervals = [[median_ci(per_round(row, "img_s_repeats")) for row in rows]
                 for rows in (first, second)]
    pairs = list(combinations(range(len(summary)), 2))
    resolved = kept = 0
    for i, j in pairs:
        for this, other in ((0, 1), (1, 0)):
            (lo_i, hi_i), (lo_j, hi_j) = intervals[this][i], intervals[this][j]
            if hi_i < lo_j or hi_j < lo_i:
                resolved += 1
                before = summary[i][f"pass{this + 1}_img_s"] > summary[j][f"pass{this + 1}_img_s"]
                after = summary[i][f"pass{other + 1}_img_s"] > summary[j][f"pass{other + 1}_img_s"]
                kept += before == after
    relative = [blocked(rows) for rows in (first, second)]
    medians = [[statistics.median(series) for series in rel] for rel in relative]
    spreads = [spread_of(series)[0] for rel in relative for series in rel]
    # Robust per-round sd of the blocked rates (MAD x 1.4826), pooled over configurations.
    sd = statistics.median(
        statistics.median(abs(v - statistics.median(series)) for v in series)
        for rel in relative for series in rel) * 1.4826
    truth = [(a + b) / 2 for a, b in zip(*medians, strict=True)]
    rng = random.Random(0)
    p_goal = {}
    for rounds in rounds_grid:
        # The median of n rounds has sd about 1.2533 sd / sqrt(n) (normal noise).
        s = 1.2533 * sd / math.sqrt(rounds)
        hits = 0
        for _ in range(repeats):
            a = [t + rng.gauss(0, s) for t in truth]
            b = [t + rng.gauss(0, s) for t in truth]
            hits += kendalltau(a, b).statistic >= TAU_GOAL
        p_goal[str(rounds)] = round(hits / repeats, 3)
    return {"pairs": 2 * len(pairs), "resolved_pairs": resolved, "resolved_pairs_kept": kept,
            "kendall_tau_blocked": round(float(kendalltau(*medians).statistic), 4),
            "blocked_spread_median": round(statistics.median(spreads), 4),
            "blocked_spread_max": round(max(spreads), 4),
            "round_noise_sd": round(sd, 4), "p_goal_at_rounds": p_goal}


if __name__ == "__main__":
    sys.exit(main())

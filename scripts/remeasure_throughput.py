"""Re-measure the throughput objective of a finished study on a quiet machine.

A sweep measures each trial's throughput just before training it, on whatever else the machine
is doing at that moment. On a shared CPU that number can swing several-fold between identical
models. This script measures every distinct configuration of a study again, in one process,
interleaving the configurations round by round (so slow drifts hit all of them alike), and
writes the medians next to the sweep's own numbers. It changes nothing in the study's storage.

    python scripts/remeasure_throughput.py STUDY.yaml --rounds 5 --threads 1 \
        --out results/<study>/throughput_remeasured.csv

The benchmark settings (batch, resolution, precision, warm-up, steps) are the study's own.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from mvlab.analysis import completed, load_study
    from mvlab.study import load_study as load_study_file
    from mvlab.study.locations import storage_url_for
    from mvlab.study.measure import throughput_of
    from mvlab.study.report import labels

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="the study YAML the sweep ran")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    config = load_study_file(args.study)
    table = completed(load_study(config.name, storage_url_for(config), mlflow=False))
    table["label"] = labels(table)
    configs = table.drop_duplicates("spec")[["spec", "label"]].reset_index(drop=True)
    bench = dataclasses.replace(config.bench, threads=args.threads)
    img_size = config.bench.img_size or config.data.resolution
    num_classes = 10 if config.data.dataset == "builtin" else None
    samples: dict[str, list[float]] = {spec: [] for spec in configs["spec"]}
    throughput_of(configs["spec"][0], bench, img_size, num_classes or 1000)  # warm-up
    for rnd in range(args.rounds):
        for spec in configs["spec"]:
            row = throughput_of(spec, bench, img_size, num_classes or 1000)
            samples[spec].append(float(row["throughput"]))
        print(f"round {rnd + 1}/{args.rounds} done (load {os.getloadavg()[0]:.2f})", flush=True)
    sweep = table.groupby("spec")["throughput"].agg(["median", "min", "max"])
    configs["throughput_remeasured"] = [statistics.median(samples[s]) for s in configs["spec"]]
    configs["remeasured_min"] = [min(samples[s]) for s in configs["spec"]]
    configs["remeasured_max"] = [max(samples[s]) for s in configs["spec"]]
    configs["sweep_median"] = configs["spec"].map(sweep["median"])
    configs["sweep_min"] = configs["spec"].map(sweep["min"])
    configs["sweep_max"] = configs["spec"].map(sweep["max"])
    configs["rounds"] = args.rounds
    configs["threads"] = args.threads
    configs["batch_size"] = bench.batch_size
    configs["img_size"] = img_size
    configs["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    configs.drop(columns="spec").assign(spec=configs["spec"]).to_csv(args.out, index=False)
    print(pd.DataFrame(configs.drop(columns="spec")).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

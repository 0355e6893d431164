"""Pilot for choosing the token-mixing proxy: CPU seconds per training epoch and the accuracy
reached, for a few candidate settings (task, difficulty, resolution, stem stride, width, images).

    python benchmarks/proxy_pilot.py --out results/calibration/pilot \\
        --candidate "pathfinder L6 D2" dataset=pathfinder contour_length=6 distractors=2 \\
        --candidate "same_different" dataset=same_different --patterns conv last_half --seeds 0

Each candidate trains every ``--patterns`` choice (applied to stages 3-4) for each seed with
``mvlab.training.trainer`` on one thread, and writes one CSV row per epoch: CPU seconds of the process
(``time.process_time``, so other jobs on a shared machine do not inflate it), wall seconds,
held-out and val top-1. CPU seconds are the cost figure; wall seconds show the load.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

MODEL = ("stem=16 stem_stride=2 drop_path=0.1 | depth=1 width=24 | depth=3 width=48 "
         "| depth=8 width=96 pattern=last_half heads=4 | depth=4 width=192 pattern=last_half heads=8")
DATA = dict(resolution=64, per_class=1000, val_per_class=250, heldout_fraction=0.2)
TRAIN = dict(epochs=6, batch_size=64, lr=2e-3, warmup_epochs=0.5, weight_decay=0.05,
             label_smoothing=0.0, device="cpu", threads=1)


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for pilot.csv and pilot.json")
    parser.add_argument("--candidate", nargs="+", action="append", required=True,
                        metavar=("NAME", "KEY=VALUE"),
                        help="a name, then data./train./model overrides: dataset=pathfinder "
                             "train.epochs=4 model.dim=16 model.stem_stride=2 resolution=64")
    parser.add_argument("--patterns", nargs="+", default=["conv", "last_half"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from mvlab.data import DataConfig
    from mvlab.grammar import format_spec, set_option
    from mvlab.models.complexity import complexity
    from mvlab.training.config import TrainConfig
    from mvlab.training.trainer import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, path = [], out / "pilot.csv"
    for name, *pairs in args.candidate:
        data, trn, model = dict(DATA), dict(TRAIN), {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            if key.startswith("train."):
                trn[key[6:]] = _value(value)
            elif key.startswith("model."):
                model[key[6:]] = _value(value)
            else:
                data[key.removeprefix("data.")] = _value(value)
        for pattern in args.patterns:
            spec = set_option(MODEL, "pattern", pattern)
            for key, value in model.items():
                spec = set_option(spec, key, value)
            spec = format_spec(spec)
            macs = complexity(spec, data["resolution"], num_classes=2).macs
            for seed in args.seeds:
                cfg = DataConfig(**data)
                marks = [(time.process_time(), time.perf_counter())]

                def on_epoch(epoch: int, metrics: dict, marks=marks) -> None:
                    marks.append((time.process_time(), time.perf_counter()))

                result = train(spec, cfg, TrainConfig(**trn, seed=seed), on_epoch=on_epoch)
                for epoch, metrics in enumerate(result.history):
                    row = dict(candidate=name, pattern=pattern, seed=seed, epoch=epoch + 1,
                               cpu_s=round(marks[epoch + 1][0] - marks[epoch][0], 2),
                               wall_s=round(marks[epoch + 1][1] - marks[epoch][1], 2),
                               train_images=metrics.get("train_images"),
                               heldout_top1=metrics.get("heldout_top1"),
                               val_top1=(result.val_top1 if epoch + 1 == len(result.history)
                                         else None),
                               train_loss=metrics.get("train_loss"),
                               macs=macs, status=result.status, data=json.dumps(data),
                               train=json.dumps(trn), model=json.dumps(model))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                with path.open("w", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows(rows)
    (out / "pilot.json").write_text(json.dumps({
        "host": platform.node(), "cpus": os.cpu_count(), "load_at_end": os.getloadavg(),
        "model": MODEL, "data_defaults": DATA, "train_defaults": TRAIN,
        "patterns": args.patterns, "seeds": args.seeds}, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Images/s of a proxy trial on the CPU: the sweep's default trial (built-in data, ``proxy``
preset, 64 px, batch 128) trained by ``mvlab.training.trainer`` for a short run, next to the ceiling that
``mvlab.training.bench`` measures for the same model and batch (synthetic input, training steps only).

    python benchmarks/cpu_proxy_trial.py                       # 1 epoch, threads = cores
    python benchmarks/cpu_proxy_trial.py --threads 1 --per-class 300 --epochs 1

Prints the trainer's images/s (train phase of each epoch, and whole trial wall time including
evaluation), the benchmark's training images/s, and their ratio: the share of the ceiling the
trainer keeps after data loading, augmentation, the optimiser, clipping and NaN checks. On a
machine shared with other jobs use ``--threads 1``: two OpenMP threads competing with other
processes for two cores stall each other and the numbers stop meaning anything.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="proxy")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--per-class", type=int, default=None,
                        help="cap train images per class (default: the whole built-in set)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                        help="NHWC (the default, as in the trainer)")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="NCHW, for comparison")
    parser.add_argument("--compile", default="none", help="torch.compile mode or none")
    parser.add_argument("--bench-steps", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mvlab.data import DataConfig, build_data
    from mvlab.training.bench import measure_throughput
    from mvlab.training.config import TrainConfig
    from mvlab.training.trainer import train

    data_cfg = DataConfig(dataset="builtin", resolution=args.resolution, per_class=args.per_class)
    bundle = build_data(data_cfg, args.batch_size)

    def ceiling() -> dict:
        return measure_throughput(args.spec, mode="train", batch_size=args.batch_size,
                                  img_size=args.resolution, device="cpu", precision="fp32",
                                  channels_last=args.channels_last, compile=args.compile,
                                  warmup=2, steps=args.bench_steps, repeats=3,
                                  num_classes=bundle.num_classes,
                                  clock="wall")  # compared with the trial's wall time

    # The ceiling is measured before and after the trial: on a shared machine the load changes
    # while the trial runs, and the two numbers show by how much.
    load_before = os.getloadavg()[0]
    before = ceiling()
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device="cpu",
                      warmup_epochs=0.0 if args.epochs == 1 else 1.0, progress=True,
                      channels_last=args.channels_last, compile=args.compile)
    start = time.perf_counter()
    result = train(args.spec, bundle, cfg)
    wall = time.perf_counter() - start
    if not result.ok:
        raise SystemExit(f"proxy trial failed: {result.reason}")
    images = sum(h["train_images"] for h in result.history)

    load_during = os.getloadavg()[0]
    after = ceiling()
    bench_rate = (before["img_s_median"] + after["img_s_median"]) / 2
    trainer_rate = result.images_per_s
    report = {
        "spec": args.spec, "resolution": args.resolution, "batch_size": args.batch_size,
        "epochs": args.epochs, "train_images_per_epoch": result.history[0]["train_images"],
        "threads": args.threads, "channels_last": result.channels_last, "compile": args.compile,
        "cpu": before["device_name"], "torch": before["torch"], "scan_backend": result.scan_backend,
        "load_average_1min": [round(load_before, 2), round(load_during, 2)],
        "params": result.params, "macs": result.macs,
        "trainer_images_per_s": round(trainer_rate, 2),
        "trial_images_per_s_incl_eval": round(images / wall, 2),
        "trial_wall_s": round(wall, 1),
        "bench_train_images_per_s_before_after": [before["img_s_median"], after["img_s_median"]],
        "trainer_over_bench": round(trainer_rate / bench_rate, 3),
        "val_top1": result.val_top1, "python": platform.python_version(),
    }
    print(json.dumps(report, indent=2))
    print(f"\nproxy trial: {trainer_rate:.1f} img/s training ({images / wall:.1f} img/s for the whole "
          f"trial incl. evaluation), bench ceiling {bench_rate:.1f} img/s, "
          f"ratio {report['trainer_over_bench']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()

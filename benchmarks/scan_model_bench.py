#!/usr/bin/env python
"""Training-step time of a MambaVision model on the CPU with each scan backend, as ratios.

    python benchmarks/scan_model_bench.py --model T --batch 4 --img-size 224 --steps 3

Also checks that the loss and gradients agree between ``chunked`` and ``reference`` (fp32) and
writes one CSV row per backend with --out.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mvlab.models import build_model  # noqa: E402


def train_step(model, x, target):
    model.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    return loss.detach()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="T")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--backends", default="reference,chunked")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=1000)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    target = torch.randint(0, 1000, (args.batch,))
    backends = args.backends.split(",")

    grads = {}
    for name in backends:  # correctness first: one step each, same weights
        model.set_scan_backend(name)
        torch.manual_seed(1)  # the same drop-path masks for every backend
        loss = train_step(model, x, target)
        grads[name] = (loss, [p.grad.clone() for p in model.parameters() if p.grad is not None])
    base_loss, base = grads[backends[0]]
    times = {name: [] for name in backends}
    for _ in range(args.steps):  # interleaved, so load on the machine hits all alike
        for name in backends:
            model.set_scan_backend(name)
            start = time.perf_counter()
            train_step(model, x, target)
            times[name].append(time.perf_counter() - start)
    rows = []
    for name in backends:
        loss, gs = grads[name]
        # Relative to the largest gradient entry: parameters whose true gradient is zero (a
        # conv bias before BatchNorm) only carry rounding noise, meaningless per parameter.
        scale = max(float(g.abs().max()) for g in base)
        rel = max(float((a - b).abs().max()) for a, b in zip(gs, base, strict=True)) / scale
        median = statistics.median(times[name])
        rows.append({"model": args.model, "batch": args.batch, "img_size": args.img_size,
                     "threads": torch.get_num_threads(), "backend": name,
                     "step_s_median": round(median, 3), "step_s_min": round(min(times[name]), 3),
                     "speedup_vs_first": round(statistics.median(times[backends[0]]) / median, 2),
                     "loss": float(loss), "loss_diff_vs_first": float((loss - base_loss).abs()),
                     "max_grad_diff_rel_to_largest": rel})
        print(rows[-1])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does a mid-training held-out evaluation measure the network, or its BatchNorm running stats?

Trials on the Pathfinder proxy often score exactly 50 % held-out (one class for every image,
held-out loss 2-10) at the end of an epoch whose training loss is already well below ln 2, and
recover at the last epoch, when the learning rate has decayed. One reading: in eval mode the
BatchNorm layers use running averages of activations the weights have since moved away from
(the stem, every conv block and the head normalise with them). This trains one study point the
way a trial does (``mvlab.training.trainer``: the same data, schedule and optimiser) and, every
``--every`` steps, scores the held-out split two ways:

* ``eval``: as a trial without ``train.precise_bn`` does (running statistics);
* ``precise``: the running statistics recomputed on the last ``--precise-batches`` training
  batches at the current weights first (pycls's precise BN: what ``train.precise_bn`` does
  before a trial's evaluations, ``trainer.recompute_bn_stats``), then eval mode.

    python benchmarks/bn_eval_check.py experiments/quickstart.yaml --set 'pattern=last_half' \\
        --out results/calibration/bn_eval/last_half_dim12_seed0.csv

Writes one CSV row per evaluation (step, lr, train loss since the last one, top-1 and loss of
each way). If ``eval`` sits at chance where ``precise`` does not, the metric a trial records
mid-run is an artefact of stale statistics. ``--smoke`` runs a few steps on a tiny dataset.
(The first version also scored BatchNorm in training mode on the held-out batches; the held-out
split is in class order, so a batch's own statistics erase its class, and that way sat at
chance throughout: it measured nothing and was dropped.)
"""
from __future__ import annotations

import argparse
import collections
import copy
import csv
import math
import time
from pathlib import Path

import torch
from torch import nn


def precise_copy(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """A copy of ``model`` with the BatchNorm running statistics ``train.precise_bn`` gives a
    trial: the plain average over ``batches`` at its current weights."""
    from mvlab.training.trainer import recompute_bn_stats

    clone = copy.deepcopy(model)
    recompute_bn_stats([clone], [(x,) for x in batches], torch.device("cpu"))
    return clone.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="a study YAML: its data, training and base model")
    parser.add_argument("--set", dest="point", action="append", default=[],
                        help="a knob of the study's space, KNOB=VALUE (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=95, help="optimiser steps between scores")
    parser.add_argument("--precise-batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="CSV to write")
    parser.add_argument("--smoke", action="store_true", help="tiny data, a few steps (CI)")
    args = parser.parse_args()

    import dataclasses

    import yaml

    from mvlab.study.schema import load_study
    from mvlab.study.space import resolve_point
    from mvlab.training.config import TrainResult
    from mvlab.training.evaluate import evaluate
    from mvlab.training.runtime import cpu_threads
    from mvlab.training.trainer import Position, setup_run, train_step

    overrides = ("data.per_class=24", "data.val_per_class=4", "data.heldout_fraction=0.25",
                 "train.batch_size=8", "train.epochs=1") if args.smoke else ()
    config = load_study(args.study, overrides)
    point = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.point)}
    for dim in config.space:
        point.setdefault(dim.key, dim.choices[0] if dim.kind == "categorical" else dim.low)
    point["seed"] = args.seed
    plan = resolve_point(config, point)
    train_cfg = dataclasses.replace(plan.train, progress=False, checkpoint_dir=None)
    device = torch.device("cpu")

    rows = []
    with cpu_threads(args.threads):
        run = setup_run(plan.spec, plan.data, train_cfg, device, TrainResult(), None, Position())
        every = 2 if args.smoke else args.every
        losses: list[float] = []
        # the last training batches: precise statistics from data the trial saw, without
        # drawing from the loader (which would change the trial's data order)
        recent: collections.deque = collections.deque(maxlen=args.precise_batches)
        started = time.process_time()
        run.model.train()  # evaluate() and precise_copy() leave its mode as they found it
        for epoch in range(train_cfg.epochs):
            set_epoch = getattr(run.bundle.train, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
            for x, y in run.bundle.train:
                losses.append(float(train_step(run, x, y).detach()))
                recent.append(x)
                last = run.global_step == run.steps_per_epoch * train_cfg.epochs
                if run.global_step % every and not last:
                    continue
                batches = list(recent)
                row = {"step": run.global_step, "epoch": epoch,
                       "lr": run.optimizer.param_groups[0]["lr"],
                       "train_loss": sum(losses) / len(losses)}
                for way, model in (("eval", run.model),
                                   ("precise", precise_copy(run.model, batches))):
                    scores = evaluate(model, run.bundle.heldout, device, run.precision,
                                      run.channels_last)
                    row[f"{way}_top1"], row[f"{way}_loss"] = scores["top1"], scores["loss"]
                row["cpu_s"] = time.process_time() - started
                rows.append(row)
                losses = []
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) and math.isfinite(v)
                               else f"{k}={v}" for k, v in row.items()), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()

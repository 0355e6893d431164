"""Train one network whose shared early part (stem, stages 1-2) starts from one seed's weights and
whose token stages (3-4) and head start from another's: which part of a bad initialisation holds
the network on the Pathfinder plateau?

At one seed every pattern starts with the same stem and stages 1-2 (they are conv stages, built
first), so a seed whose early part starts badly could hold every network at once. This script
splits the two parts; everything else (recipe, data, order) is the study's trial for the seed
named by --rest-seed, with the data order from --order-seed.

    python results/calibration/transplant/transplant.py results/calibration/clearance/study.yaml \
        --set data.contour_length=6 ... --pattern last_half --early-seed 2 --rest-seed 0 \
        --order-seed 0 --out results/calibration/transplant/e2r0.csv

Writes one CSV row per epoch (the trainer's history) and prints where each part came from.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import sys

import torch

from mvlab.study.schema import load_study
from mvlab.study.space import resolve_point
from mvlab.study.trial import DataCache
from mvlab.training import trainer
from mvlab.training.models import make_model
from mvlab.training.runtime import seed_everything
from mvlab.training.trainer import train

EARLY = ("patch_embed.", "levels.0.", "levels.1.")  # stem and stages 1-2, with their downsamples


def built(spec: str, num_classes: int, seed: int) -> torch.nn.Module:
    # As the trainer builds it: seeded immediately before the model is made.
    seed_everything(seed)
    return make_model(spec, num_classes)


def transplanted(spec: str, num_classes: int, early_seed: int, rest_seed: int) -> torch.nn.Module:
    model = built(spec, num_classes, rest_seed)
    donor = built(spec, num_classes, early_seed).state_dict()
    state = model.state_dict()
    moved = [name for name in state if name.startswith(EARLY)]
    if not moved or len(moved) == len(state):
        sys.exit(f"transplant: the early part {EARLY} names {len(moved)} of {len(state)} tensors")
    state.update({name: donor[name] for name in moved})
    model.load_state_dict(state)
    return model


def as_the_sweep(spec: str, num_classes: int) -> None:
    """Make the trainer's seeding also draw a model's construction, as a sweep trial's does: the
    trainer seeds, then builds from the spec. Given a built model it would start drop-path and
    dropout from the bare seed instead, so the only difference from the trial would no longer be
    the initial weights."""
    seed_only = trainer.seed_everything

    def seed_and_build(seed: int) -> None:
        seed_only(seed)
        make_model(spec, num_classes)

    trainer.seed_everything = seed_and_build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides")
    parser.add_argument("--pattern", required=True)
    parser.add_argument("--dim", type=int, default=24)
    parser.add_argument("--early-seed", type=int, required=True)
    parser.add_argument("--rest-seed", type=int, required=True)
    parser.add_argument("--order-seed", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    config = load_study(args.study, args.overrides)
    plan = resolve_point(config, {"pattern": args.pattern, "dim": args.dim,
                                  "seed": args.rest_seed})
    data_cfg = dataclasses.replace(plan.data, order_seed=args.order_seed)
    bundle = DataCache().get(data_cfg, plan.train)
    model = transplanted(plan.spec, int(bundle.num_classes), args.early_seed, args.rest_seed)
    print(f"{plan.spec}\nearly part (stem, stages 1-2) from seed {args.early_seed}; stages 3-4 "
          f"and head from seed {args.rest_seed}; data order seed {args.order_seed}; "
          f"train.seed {plan.train.seed}", flush=True)
    as_the_sweep(plan.spec, int(bundle.num_classes))
    result = train(model, bundle, plan.train)
    if result.status != "ok":
        sys.exit(f"transplant: training failed: {result.reason}")
    # The trainer's history counts epochs from 0; the rows count them from 1, as MLflow does.
    rows = [{"early_seed": args.early_seed, "rest_seed": args.rest_seed,
             "order_seed": args.order_seed, "pattern": args.pattern, **epoch, "epoch": i + 1}
            for i, epoch in enumerate(result.history)]
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(f"epoch {row['epoch']}: train loss {row.get('train_loss'):.4f}, "
              f"held-out {row.get('heldout_top1')}")
    print(f"val top-1 {result.val_top1}")


if __name__ == "__main__":
    main()

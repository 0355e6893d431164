"""A study folder's per-trial epoch table for its RUN.md, from the files its report wrote, so no
number is copied by hand:

    python results/calibration/epoch_table.py results/calibration/<folder>

Reads ``epochs.csv`` (``mlflow_epochs.py``: held-out top-1 of every epoch, final val) and ``trials.csv``
(``mvlab report``: final scores, every epoch's training loss); prints one markdown row per
finished trial, in seed then pattern order, with the epoch it left the plateau by the report's
own rule (``mvlab.analysis.plateau.exit_epochs``).
"""
import csv
import math
import sys
from pathlib import Path

import pandas as pd

from mvlab.analysis.plateau import _losses, exit_epochs

PATTERNS = ["conv", "last_half", "mamba_only", "attn_only"]

folder = Path(sys.argv[1])
trials = pd.read_csv(folder / "trials.csv")
trials = trials[trials["state"] == "COMPLETE"]
heldout: dict[int, list[float]] = {}
val: dict[int, float] = {}
with open(folder / "epochs.csv") as f:
    for row in csv.DictReader(f):
        number = int(row["trial"].split(":")[0].split()[1])
        if row["epoch"] != "":
            heldout.setdefault(number, []).append(float(row["heldout_top1"]))
        if row.get("val_top1"):
            val[number] = float(row["val_top1"])
trials = trials.assign(exit=exit_epochs(trials),
                       order=trials["params.pattern"].map(PATTERNS.index))
print("| pattern | seed | train loss by epoch | held-out by epoch | held-out / val "
      "| left the plateau |")
print("|---|---|---|---|---|---|")
for _, t in trials.sort_values(["seed", "order"]).iterrows():
    losses = " / ".join(f"{v:.3f}" for v in _losses(t["train_losses"]))
    scores = " / ".join(f"{v:.1f}" for v in heldout.get(int(t["trial"]), []))
    left = "never" if math.isinf(t["exit"]) else f"epoch {int(t['exit'])}"
    print(f"| {t['params.pattern']} | {int(t['seed'])} | {losses} | {scores} "
          f"| **{t['heldout_top1']:.1f}** / {val[int(t['trial'])]:.1f} | {left} |")

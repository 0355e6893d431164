"""When did each network leave the plateau, and how long did its rise take? From the committed
epochs.csv files of the 5-epoch probes (train loss per epoch: the mean over the epoch; the
mid-run held-out scores are not used, since before `train.precise_bn` they read stale BatchNorm
statistics, results/calibration/bn_eval/). A trial is off the plateau in the first epoch whose
mean training loss is below 0.98 ln 2 = 0.679, the report's rule (mvlab.analysis.plateau).

    python results/calibration/plateau_timing.py > results/calibration/plateau_timing.txt
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
THRESHOLD = 0.98 * math.log(2)
PROBES = {  # folder: what ran (RUN.md sections of clearance/, same_different/)
    "clearance/c6d2_e5": "contour 6, 2 distractors, forward joints, seed 0 (section 6)",
    "clearance/c6d2_e5_centred": "contour 6, 2 distractors, centred, seed 0 (section 7)",
    "clearance/c6d2_e5_centred/mixers": "contour 6, 2 distractors, centred, seed 0 (section 7)",
    "clearance/c6d2_e5_centred_s1": "contour 6, 2 distractors, centred, seed 1 (section 9)",
    "clearance/c6d2_e5_centred_s1/controls": "contour 6, 2 distractors, centred, seed 1 (section 9)",
    "clearance/c6d2_e5_centred_s2": "contour 6, 2 distractors, centred, seed 2 (section 10)",
    "clearance/c8d2_e5_centred_partial": "contour 8, 2 distractors, centred, seed 0, 4 epochs",
    "same_different/g2c1d0_e5": "same_different glyph 2, changed 1, no distractors, seed 0",
    "curriculum/attn_only": "contour 6, 2 distractors, centred, epochs 1-2 on contour 2 "
                            "(curriculum/RUN.md, section 1)",
    "curriculum/conv_last_half": "contour 6, 2 distractors, centred, epochs 1-2 on contour 2 "
                                 "(curriculum/RUN.md, section 2)",
    "lr5e4/s0": "contour 6, 2 distractors, centred, peak lr 5e-4, seed 0 (lr5e4/RUN.md, section 1)",
    "lr5e4/s1": "contour 6, 2 distractors, centred, peak lr 5e-4, seed 1 (lr5e4/RUN.md, section 2)",
}
# Probes whose first epochs trained on a curriculum stage (data.curriculum): their losses there
# are on other images, so the plateau is looked for from the first epoch on the task.
STAGE_EPOCHS = {"curriculum/attn_only": 2, "curriculum/conv_last_half": 2}


def rows() -> list[dict]:
    out = []
    for folder, what in PROBES.items():
        path = HERE / folder / "epochs.csv"
        if not path.exists():
            continue
        epochs = pd.read_csv(path).dropna(subset=["epoch"])
        for trial, run in epochs.groupby("trial", sort=False):
            run = run.sort_values("epoch")
            losses = run["train_loss"].tolist()
            first = STAGE_EPOCHS.get(folder, 0)
            off = next((i + 1 for i, loss in enumerate(losses)
                        if i >= first and loss < THRESHOLD), None)
            out.append({"probe": what, "trial": trial.split(": ", 1)[1],
                        "train loss by epoch": " / ".join(f"{v:.3f}" for v in losses),
                        "first epoch off the plateau":
                            off if off else f"none in {len(losses)}",
                        "final held-out top-1": round(float(run["heldout_top1"].iloc[-1]), 1)})
    return out


if __name__ == "__main__":
    table = rows()
    print("| " + " | ".join(table[0]) + " |")
    print("|" + "---|" * len(table[0]))
    for row in table:
        print("| " + " | ".join(map(str, row.values())) + " |")

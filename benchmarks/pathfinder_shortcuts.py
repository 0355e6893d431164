"""How far a reader that sees only the contours next to the two markers gets on Pathfinder,
with B's start placed freely (``data.ends=free``) or mirrored (``data.ends=mirrored``).

    python benchmarks/pathfinder_shortcuts.py                      # 16,384 layouts a setting
    python benchmarks/pathfinder_shortcuts.py --images 2048 --out shortcuts.csv

Two readers, both on the true geometry of ``layout`` (a network sees only pixels, so they bound
what such a reading can do rather than measure what a network does):

- ``facing_rule``: the best single threshold on how much the dash leaving each marker points at
  the other marker;
- ``local_k``: a small MLP given the first k dashes of the contour at each marker (directions in
  the frame of the line joining the markers), trained on half the layouts and scored on the
  other half. ``local_1`` reads what the facing rule reads; growing k follows the contours
  further, and at k near contour_length / 2 the two reads meet in a connected image.

A network that scores above ``local_k`` uses more than k dashes of contour at each marker. The
task asks for long-range mixing where the readers of few dashes stay near chance.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time

SETTINGS = [(4, 1), (6, 2), (8, 2), (10, 4)]
HORIZONS = (1, 2, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16384, help="layouts a setting (even)")
    parser.add_argument("--ends", nargs="+", default=["free", "mirrored"])
    parser.add_argument("--clearance", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=3000, help="MLP training steps a reader")
    parser.add_argument("--out", help="also write the table as CSV here")
    args = parser.parse_args()

    import numpy as np
    import torch

    from mvlab.data.procedural.pathfinder import layout

    torch.set_num_threads(1)
    rows = []
    for contour_length, distractors in SETTINGS:
        for ends in args.ends:
            labels = np.arange(args.images) % 2
            started = time.thread_time()
            spec = layout(np.random.default_rng(1), labels, 64, contour_length=contour_length,
                          distractors=distractors, clearance=args.clearance, ends=ends)
            row = {"contour_length": contour_length, "distractors": distractors,
                   "clearance": args.clearance, "ends": ends, "images": args.images,
                   "layout_cpu_s": round(time.thread_time() - started, 2),
                   "facing_rule": facing_rule(spec)}
            for k in HORIZONS:
                row[f"local_{k}"] = local_reader(spec, k, seed=k, steps=args.steps)
            rows.append(row)
            print(f"contour {contour_length:2d} distractors {distractors} ends {ends:8s}: facing "
                  f"rule {row['facing_rule']:6.1%}; " + ", ".join(
                      f"{k} dash{'es' if k > 1 else ''} {row[f'local_{k}']:6.1%}"
                      for k in HORIZONS), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}; numpy {np.__version__}; torch "
          f"{torch.__version__}; python {sys.version.split()[0]}")
    if args.out:
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def facing_rule(spec: dict) -> float:
    """Best one-threshold accuracy of: cos(first dash of A, direction to marker 2) + cos(the dash
    at marker 2, direction to marker 1). At marker 2 that dash is A's last one, reversed, when
    the image is connected, and B's first one otherwise."""
    import numpy as np

    labels, dirs, markers = spec["labels"], spec["dirs"], spec["markers"]
    to_second = markers[:, 1] - markers[:, 0]
    to_second /= np.linalg.norm(to_second, axis=-1, keepdims=True)
    at_second = np.where(labels[:, None] == 1, -dirs[:, 0, -1], dirs[:, 1, 0])
    score = (dirs[:, 0, 0] * to_second).sum(-1) + (at_second * -to_second).sum(-1)
    order = np.argsort(score)
    ones_below = np.concatenate([[0], np.cumsum(labels[order])])  # labels 1 at or below a cut
    zeros_below = np.arange(labels.size + 1) - ones_below
    # Predict 1 above the cut: correct are the zeros below plus the ones above.
    correct = zeros_below + (labels.sum() - ones_below)
    return float(max(correct.max(), labels.size - correct.min()) / labels.size)


def local_features(spec: dict, k: int):
    """(n, 4k): the first k dash directions leaving each marker, in the frame whose x axis runs
    from marker 1 to marker 2. At marker 2 they are A's last k dashes, reversed, when connected
    and B's first k otherwise."""
    import numpy as np

    labels, dirs, markers = spec["labels"], spec["dirs"], spec["markers"]
    x = markers[:, 1] - markers[:, 0]
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.stack([-x[:, 1], x[:, 0]], -1)
    first = dirs[:, 0, :k]
    second = np.where(labels[:, None, None] == 1, -dirs[:, 0, ::-1][:, :k], dirs[:, 1, :k])
    both = np.concatenate([first, second], 1)  # (n, 2k, 2)
    return np.concatenate([(both * x[:, None]).sum(-1), (both * y[:, None]).sum(-1)], 1)


def local_reader(spec: dict, k: int, seed: int = 0, steps: int = 3000) -> float:
    """Held-out accuracy of an MLP (2 x 128) on ``local_features``, trained on every other pair
    of layouts (labels alternate, so both halves are balanced) and scored on the rest."""
    import numpy as np
    import torch
    from torch import nn

    features = torch.tensor(local_features(spec, k), dtype=torch.float32)
    labels = torch.tensor(spec["labels"], dtype=torch.float32)
    pair = np.arange(labels.numel()) // 2
    train, test = torch.tensor(pair % 2 == 0), torch.tensor(pair % 2 == 1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(features.shape[1], 128), nn.ReLU(), nn.Linear(128, 128),
                          nn.ReLU(), nn.Linear(128, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    x, t = features[train], labels[train]
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(0, x.shape[0], (256,), generator=generator)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x[batch]).squeeze(1),
                                                              t[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        predicted = model(features[test]).squeeze(1) > 0
    return float((predicted == labels[test].bool()).float().mean())


if __name__ == "__main__":
    main()

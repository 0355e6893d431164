"""How far readers that see only what lies next to the two markers get on Pathfinder.

    python benchmarks/pathfinder_shortcuts.py                      # 16,384 layouts a setting
    python benchmarks/pathfinder_shortcuts.py --images 2048 --out shortcuts.csv

Each reader is fitted on half the layouts and scored on the other half; its score is what that
reading achieves, a lower bound on what it can do, not a ceiling:

- ``facing_rule``: the best single threshold on how much the dash leaving each marker points at
  the other marker (true geometry);
- ``local_k``: a small MLP given the first k dashes of the contour at each marker, as
  directions in the frame of the line joining the markers (true geometry). It relates each
  marker's contour to where the other marker is, so it is not local in the receptive-field
  sense; where 2k dashes cover the contour it sees all of it;
- ``patch_m``: a small CNN given only the pixels within 8 px of marker m (a 17 x 17 crop of
  the drawn image): a truly local reading, blind to the other marker. Above chance it finds
  something in the drawing that differs between the classes around one marker.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time

# light (numpy only), so --help stays fast; torch waits until after parsing
from mvlab.data.config import DataConfig
from mvlab.data.procedural.pathfinder import JOINTS

SETTINGS = [(4, 1), (6, 2), (8, 2), (10, 4)]
HORIZONS = (1, 2, 3)
PATCH = 8  # px each side of a marker: a 17 x 17 crop (at 64 px a dash is 3 px, a step 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16384, help="layouts a setting (even)")
    parser.add_argument("--clearance", type=float, default=2.0)
    parser.add_argument("--joints", default=DataConfig().joints, choices=JOINTS,
                        help="where each gap turns (data.joints; forward: the generator before "
                             "the knob)")
    parser.add_argument("--steps", type=int, default=3000, help="MLP training steps a reader")
    parser.add_argument("--out", help="also write the table as CSV here")
    args = parser.parse_args()

    import numpy as np
    import torch

    from mvlab.data.procedural.pathfinder import draw, layout

    torch.set_num_threads(1)
    rows = []
    for contour_length, distractors in SETTINGS:
        labels = np.arange(args.images) % 2
        started = time.thread_time()
        spec = layout(np.random.default_rng(1), labels, 64, contour_length=contour_length,
                      distractors=distractors, clearance=args.clearance, joints=args.joints)
        row = {"contour_length": contour_length, "distractors": distractors,
               "clearance": args.clearance, "joints": args.joints, "images": args.images,
               "layout_cpu_s": round(time.thread_time() - started, 2),
               "facing_rule": facing_rule(spec)}
        for k in HORIZONS:
            row[f"local_{k}"] = local_reader(spec, k, seed=k, steps=args.steps)
        images = draw(spec, 64)
        for marker in (0, 1):
            row[f"patch_{marker + 1}"] = patch_reader(images, spec, marker, steps=args.steps)
        rows.append(row)
        print(f"contour {contour_length:2d} distractors {distractors}: facing rule "
              f"{row['facing_rule']:6.1%}; " + ", ".join(
                  f"{k} dash{'es' if k > 1 else ''} {row[f'local_{k}']:6.1%}"
                  for k in HORIZONS) + f"; pixels around marker 1 {row['patch_1']:6.1%}, "
              f"marker 2 {row['patch_2']:6.1%}", flush=True)
    finish(rows, args.out, f"torch {torch.__version__}")


def finish(rows: list[dict], out: str | None, versions: str = "") -> None:
    """Print the machine's load and the versions that made ``rows``; write them to ``out``."""
    import numpy as np

    print(f"load average {os.getloadavg()[0]:.2f}; numpy {np.__version__}; {versions}"
          f"{'; ' if versions else ''}python {sys.version.split()[0]}")
    if out:
        with open(out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def facing_rule(spec: dict) -> float:
    """Best one-threshold accuracy of: cos(first dash of A, direction to marker 2) + cos(the dash
    at marker 2, direction to marker 1), the one-dash reading of ``local_features``. At marker 2
    that dash is A's last one, reversed, when the image is connected, and B's first one
    otherwise."""
    import numpy as np

    labels = spec["labels"]
    along = local_features(spec, 1)[:, :2]  # each marker's dash along the line 1 -> 2
    score = along[:, 0] - along[:, 1]
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
    """Held-out accuracy of an MLP (2 x 128) on ``local_features``."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    features = torch.tensor(local_features(spec, k), dtype=torch.float32)
    model = nn.Sequential(nn.Linear(features.shape[1], 128), nn.ReLU(), nn.Linear(128, 128),
                          nn.ReLU(), nn.Linear(128, 1))
    return _fit_and_score(model, features, spec["labels"], seed, steps)


def patches(images, markers, marker: int):
    """(n, 1, 17, 17) float crops of ``images`` centred on marker ``marker`` (0 or 1), zero
    outside the image."""
    import numpy as np

    padded = np.pad(images, ((0, 0), (PATCH, PATCH), (PATCH, PATCH)))
    centre = np.floor(markers[:, marker] + 0.5).astype(int) + PATCH  # as draw rounds them
    offsets = np.arange(-PATCH, PATCH + 1)
    rows = centre[:, 0, None, None] + offsets[None, :, None]
    cols = centre[:, 1, None, None] + offsets[None, None, :]
    crops = padded[np.arange(len(images))[:, None, None], rows, cols]
    return crops[:, None].astype(np.float32) / 255.0


def patch_reader(images, spec: dict, marker: int, seed: int = 0, steps: int = 3000) -> float:
    """Held-out accuracy of a small CNN on the crops around one marker (``patches``)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    crops = torch.tensor(patches(images, spec["markers"], marker))
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(32 * 5 * 5, 64), nn.ReLU(), nn.Linear(64, 1))
    return _fit_and_score(model, crops, spec["labels"], seed, steps)


def _fit_and_score(model, inputs, labels, seed: int, steps: int) -> float:
    """Train ``model`` on every other pair of examples (labels alternate, so both halves are
    balanced) with AdamW and a cosine schedule; its accuracy on the rest."""
    import numpy as np
    import torch
    from torch import nn

    labels = torch.tensor(labels, dtype=torch.float32)
    pair = np.arange(labels.numel()) // 2
    train, test = torch.tensor(pair % 2 == 0), torch.tensor(pair % 2 == 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    x, t = inputs[train], labels[train]
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
        predicted = model(inputs[test]).squeeze(1) > 0
    return float((predicted == labels[test].bool()).float().mean())


if __name__ == "__main__":
    main()

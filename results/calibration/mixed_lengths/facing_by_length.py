"""The facing rule of benchmarks/pathfinder_shortcuts.py per contour length, 4,096 layouts each
(2 distractors, centred joints, clearance 2): what a reader of the dash at each marker gets on a
mix of lengths. Run from the repository root:
    python results/calibration/mixed_lengths/facing_by_length.py > facing_by_length.txt"""
import sys

import numpy as np

sys.path.insert(0, "benchmarks")
from pathfinder_shortcuts import facing_rule  # noqa: E402

from mvlab.data.procedural.pathfinder import layout  # noqa: E402

out = {}
for length in range(2, 11):
    spec = layout(np.random.default_rng(1), np.arange(4096) % 2, 64, contour_length=length,
                  distractors=2, clearance=2.0, joints="centred")
    out[length] = facing_rule(spec)
print({k: round(v, 3) for k, v in out.items()}, "mean of 4-10",
      round(float(np.mean([out[k] for k in range(4, 11)])), 3), "mean of 2-10",
      round(float(np.mean(list(out.values()))), 3))

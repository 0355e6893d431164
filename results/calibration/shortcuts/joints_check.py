# A diagnosis on two settings, not a change to the generator: does drawing each gap half along
# each neighbouring dash (so that a contour's start and end look alike) remove the local cue at
# marker 2? Run from the repository root, once as drawn today and once with centred gaps:
#     python results/calibration/shortcuts/joints_check.py forward
#     python results/calibration/shortcuts/joints_check.py symmetric
# It runs as committed only at fd9e49f, before data.joints: since 10903e1 `_shapes` takes the
# joints, and `layout(..., joints="centred")` draws what "symmetric" patched in (section 1b of
# RUN.md measures it at every length).
import math
import sys

import numpy as np

sys.path.insert(0, "benchmarks")
import pathfinder_shortcuts as sc

import mvlab.data.procedural.pathfinder as pf


def symmetric_shapes(rng, n, length, g):
    turns = rng.uniform(-pf.MAX_TURN, pf.MAX_TURN, (n, length - 1))
    angles = rng.uniform(0, 2 * math.pi, (n, 1)) + np.concatenate([np.zeros((n, 1)), np.cumsum(turns, axis=1)], axis=1)
    dirs = np.stack([np.sin(angles), np.cos(angles)], -1)
    gap = g["step"] - g["dash"]
    hops = g["dash"] * dirs[:, :-1] + gap / 2 * (dirs[:, :-1] + dirs[:, 1:])
    starts = np.concatenate([np.zeros((n, 1, 2)), np.cumsum(hops, axis=1)], 1)
    return starts, dirs

mode = sys.argv[1]
if mode == "symmetric":
    pf._shapes = symmetric_shapes
labels = np.arange(8192) % 2
for c, d in [(6, 2), (10, 4)]:
    spec = pf.layout(np.random.default_rng(1), labels, 64, contour_length=c, distractors=d, clearance=2.0)
    images = pf.draw(spec, 64)
    print(mode, c, d, f"patch_2 {sc.patch_reader(images, spec, 1):.3f}", flush=True)

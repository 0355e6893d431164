"""How often the first Pathfinder generator (``data.clearance=0``, with ``--joints forward``) let
the two candidate contours touch or a contour run into a marker it does not carry, what the
default clearance leaves, how
far a local shortcut goes (do the dashes at the two markers point at each other?), and what the
clearance costs in generation speed (CPU time, one thread).

    python benchmarks/pathfinder_clearance.py                     # 4,096 images a setting
    python benchmarks/pathfinder_clearance.py --joints forward    # the committed run's drawing
    python benchmarks/pathfinder_clearance.py --images 512 --out overlaps.csv --examples ex.png

Per (contour_length, distractors) setting and clearance: the fraction of images whose A and B
touch (``contours_touch``), whose markers touch a contour not their own (``marker_touches_other``),
either; ``facing_rule``, the best accuracy of one threshold on how much the dash leaving each
marker points at the other marker (``pathfinder_shortcuts.py``: a rule that never follows a
contour past its first dash); and images generated per CPU second (``generate_split``,
the train pool only).
"""
from __future__ import annotations

import argparse
import time

# light (numpy only), so --help stays fast; torch waits until after parsing
from mvlab.data.config import DataConfig
from mvlab.data.procedural.pathfinder import JOINTS

SETTINGS = [(2, 0), (4, 1), (6, 2), (10, 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096, help="images a setting (even)")
    parser.add_argument("--clearance", type=float, nargs="+", default=[0.0, 2.0])
    parser.add_argument("--joints", default=DataConfig().joints, choices=JOINTS,
                        help="where each gap turns (data.joints; forward: the committed run)")
    parser.add_argument("--out", help="also write the table as CSV here")
    parser.add_argument("--examples", help="also draw 'disconnected' images of contour 2 whose "
                                           "marker touches another contour (clearance 0) beside "
                                           "ones of the first clearance above 0, as a PNG")
    args = parser.parse_args()

    import numpy as np
    from pathfinder_shortcuts import facing_rule, finish  # beside this script

    from mvlab.data.procedural import definition, generate_split
    from mvlab.data.procedural.pathfinder import layout, overlaps

    rows = []
    for contour_length, distractors in SETTINGS:
        for clearance in args.clearance:
            knobs = dict(contour_length=contour_length, distractors=distractors,
                         joints=args.joints)
            labels = np.arange(args.images) % 2
            hits = overlaps(layout(np.random.default_rng(0), labels, 64, clearance=clearance,
                                   **knobs), 64)
            spec = definition(DataConfig(dataset="pathfinder", per_class=args.images // 2,
                                         val_per_class=1, clearance=clearance, **knobs))
            started = time.thread_time()
            generate_split(spec, "train")
            seconds = time.thread_time() - started
            row = {"contour_length": contour_length, "distractors": distractors,
                   "clearance": clearance, "joints": args.joints, "images": args.images,
                   "contours_touch": hits["contours_touch"].mean(),
                   "marker_touches_other": hits["marker_touches_other"].mean(),
                   "either": (hits["contours_touch"] | hits["marker_touches_other"]).mean(),
                   "facing_rule": facing_rule(
                       layout(np.random.default_rng(1), labels, 64, clearance=clearance, **knobs)),
                   "images_per_cpu_s": args.images / seconds}
            rows.append(row)
            print(f"contour {contour_length:2d} distractors {distractors} clearance {clearance:g}: "
                  f"touching {row['contours_touch']:6.1%}, marker on another contour "
                  f"{row['marker_touches_other']:6.1%}, either {row['either']:6.1%}; facing "
                  f"rule {row['facing_rule']:6.1%}; "
                  f"{row['images_per_cpu_s']:9,.0f} images per CPU s", flush=True)
    if args.examples:
        draw_examples(args.examples, [c for c in args.clearance if c > 0][:1] or [2.0],
                      args.joints)
    finish(rows, args.out)


def draw_examples(path: str, clearance: list[float], joints: str, count: int = 8) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mvlab.data.procedural.pathfinder import draw, layout, overlaps

    labels = np.zeros(400, dtype=np.int64)  # "disconnected" only
    first = layout(np.random.default_rng(1), labels, 64, contour_length=2, distractors=0,
                   joints="forward")
    flagged = np.flatnonzero(overlaps(first, 64)["marker_touches_other"])[:count]
    now = layout(np.random.default_rng(1), labels[:count], 64, contour_length=2, distractors=0,
                 clearance=clearance[0], joints=joints)
    rows = [("clearance 0,\nflagged", draw(first, 64)[flagged]),
            (f"clearance {clearance[0]:g}", draw(now, 64))]
    fig, axes = plt.subplots(2, count, figsize=(1.3 * count, 3.0))
    for (title, images), row in zip(rows, axes, strict=True):
        for ax, image in zip(row, images, strict=False):  # fewer flagged than asked: blanks
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
        row[0].set_ylabel(title, fontsize=7)
    fig.suptitle('Pathfinder contour 2, label "disconnected"', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

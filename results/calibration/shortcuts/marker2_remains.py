# What the crop around marker 2 still holds under centred joints: the ink of the marker's own
# contour, and of every other contour, within 8 px of it (the patch reader's 17 x 17 crop), by
# class; and the mean size of the turn next to marker 2 (A's last, B's first), which a review
# reported biased for B. Run from the repository root:
#     python results/calibration/shortcuts/marker2_remains.py
# "best cut" is the best one-threshold accuracy, fitted and scored on the same 16,384 layouts:
# optimistic by about a point (the own-contour column, which differs by class by nothing, shows
# how much).
import numpy as np

from mvlab.data.procedural.pathfinder import draw, layout

N, R = 16384, 8


def best_cut(score, labels):
    order = np.argsort(score, kind="stable")
    ones = np.concatenate([[0], np.cumsum(labels[order])])
    correct = np.arange(labels.size + 1) - ones + (labels.sum() - ones)
    return max(correct.max(), labels.size - correct.min()) / labels.size


def ink_near(images, at):
    pad = np.pad(images, ((0, 0), (R, R), (R, R)))
    rc = np.floor(at + 0.5).astype(int)  # points are (y, x), rounded as stamp() does
    crops = np.stack([pad[i, y:y + 2 * R + 1, x:x + 2 * R + 1] for i, (y, x) in enumerate(rc)])
    assert crops[:, R, R].all()  # the marker's own disk
    return crops.sum((1, 2))


def turn_degrees(d1, d2):
    cross = d1[..., 0] * d2[..., 1] - d1[..., 1] * d2[..., 0]
    return np.degrees(np.abs(np.arctan2(cross, (d1 * d2).sum(-1)))).mean()


print("contour, distractors, joints | ink near marker 2: label 1 / label 0, best cut | "
      "own contour | other contours | turn at marker 2, A's last / B's first (uniform: 15.0)")
for contour_length, distractors in [(4, 1), (6, 2), (8, 2), (10, 4)]:
    for joints in ("forward", "centred"):
        labels = np.arange(N) % 2
        spec = layout(np.random.default_rng(1), labels, 64, contour_length=contour_length,
                      distractors=distractors, clearance=2.0, joints=joints)
        at = spec["markers"][:, 1]
        total = ink_near(draw(spec, 64) > 0, at)
        own = np.where(labels == 1, 0, 1)  # A carries marker 2 when connected, B when not
        alone = {"starts": spec["starts"][np.arange(N), own][:, None],
                 "dirs": spec["dirs"][np.arange(N), own][:, None], "markers": spec["markers"]}
        mine = ink_near(draw(alone, 64) > 0, at)
        cells = []
        for ink in (total, mine, total - mine):
            cells.append(f"{ink[labels == 1].mean():5.2f} / {ink[labels == 0].mean():5.2f}, "
                         f"{best_cut(ink, labels):.1%}")
        a, b = spec["dirs"][:, 0], spec["dirs"][:, 1]
        cells.append(f"{turn_degrees(a[:, -2], a[:, -1]):5.2f} / {turn_degrees(b[:, 0], b[:, 1]):5.2f}")
        print(f"{contour_length:2d}, {distractors}, {joints:8s} | " + " | ".join(cells), flush=True)

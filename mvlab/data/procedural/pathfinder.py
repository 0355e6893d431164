"""Pathfinder (Linsley et al. 2018, as in Long Range Arena): are the two marked points the two
ends of one dashed contour?

Every image holds two marked-pair candidates, contours A and B, plus ``distractors`` unmarked
contours, all of ``contour_length`` dashes with a random turn between dashes. One marker sits
on A's start ``e0``. B is placed so that its start ``f`` lies exactly as far from ``e0`` as A's
far end ``e1`` does. Label 1 ("connected") puts the second marker on ``e1``, label 0 on ``f``:
the two classes have the same contours, the same marker distance and the same ink, and differ
only in whether a path joins the markers, which can be far apart; local features cannot tell.

Geometry scales with the side ``S`` (unit ``u = S / 64``): dashes 3u long with 2u gaps, a pen of
round(u) px, markers of radius 2u; a contour of L dashes spans up to 5uL px (L=10: 78 % of S).
"""
from __future__ import annotations

import math

import numpy as np

from mvlab.data.procedural.draw import blank, disk_offsets, segment_points, square_offsets, stamp
from mvlab.errors import DataError

MAX_TURN = math.pi / 6  # per dash: curvy enough to fold long contours into the square
PLACEMENT_ATTEMPTS = 24
CLASSES = ("disconnected", "connected")


def geometry(side: int) -> dict[str, float]:
    u = side / 64.0
    radius = max(1.5, 2.0 * u)
    return dict(dash=3.0 * u, step=5.0 * u, pen=max(1, round(u)), radius=radius,
                margin=math.ceil(radius) + 1)


def _shapes(rng: np.random.Generator, n: int, length: int,
            g: dict) -> tuple[np.ndarray, np.ndarray]:
    """Dash starts (n, length, 2) relative to the contour's start, and unit directions."""
    turns = rng.uniform(-MAX_TURN, MAX_TURN, (n, length - 1))
    angles = rng.uniform(0, 2 * math.pi, (n, 1)) + np.concatenate(
        [np.zeros((n, 1)), np.cumsum(turns, axis=1)], axis=1)
    dirs = np.stack([np.sin(angles), np.cos(angles)], -1)
    starts = np.concatenate([np.zeros((n, 1, 2)), np.cumsum(g["step"] * dirs, axis=1)[:, :-1]], 1)
    return starts, dirs


def _extent(starts: np.ndarray, dirs: np.ndarray, g: dict) -> tuple[np.ndarray, np.ndarray]:
    points = np.concatenate([starts, starts + g["dash"] * dirs], axis=-2)
    return points.min(axis=-2), points.max(axis=-2)


def _inside(starts: np.ndarray, dirs: np.ndarray, side: int, g: dict) -> np.ndarray:
    lo, hi = _extent(starts, dirs, g)
    return (lo >= g["margin"]).all(-1) & (hi <= side - 1 - g["margin"]).all(-1)


def _placed(rng: np.random.Generator, n: int, length: int, side: int, g: dict):
    """``n`` contours placed uniformly where they fit whole inside the margins."""
    starts, dirs = np.empty((n, length, 2)), np.empty((n, length, 2))
    todo = np.arange(n)
    room = side - 1 - 2 * g["margin"]
    for _ in range(1000):
        s, d = _shapes(rng, todo.size, length, g)
        lo, hi = _extent(s, d, g)
        fits = ((hi - lo) <= room).all(-1)
        offset = g["margin"] - lo + rng.random((todo.size, 2)) * (room - (hi - lo))
        starts[todo[fits]], dirs[todo[fits]] = (s + offset[:, None])[fits], d[fits]
        todo = todo[~fits]
        if not todo.size:
            return starts, dirs
    raise DataError(f"data.contour_length={length}: contours this long do not fit a {side} px "
                    f"image; use a shorter contour_length or a higher resolution")


def generate(rng: np.random.Generator, labels: np.ndarray, side: int, *, contour_length: int,
             distractors: int) -> np.ndarray:
    """Images (n, side, side) uint8 for ``labels`` (1 = connected, 0 = disconnected)."""
    n, g = labels.size, geometry(side)
    a_starts, a_dirs = np.empty((n, contour_length, 2)), np.empty((n, contour_length, 2))
    b_starts, b_dirs = np.empty_like(a_starts), np.empty_like(a_dirs)
    todo = np.arange(n)
    while todo.size:
        s, d = _placed(rng, todo.size, contour_length, side, g)
        e0 = s[:, 0]
        reach = np.linalg.norm(s[:, -1] + g["dash"] * d[:, -1] - e0, axis=-1)
        found = np.zeros(todo.size, dtype=bool)
        bs, bd = np.empty_like(s), np.empty_like(d)
        for _ in range(PLACEMENT_ATTEMPTS):
            need = np.flatnonzero(~found)
            if not need.size:
                break
            cs, cd = _shapes(rng, need.size, contour_length, g)
            phi = rng.uniform(0, 2 * math.pi, need.size)
            f = e0[need] + reach[need, None] * np.stack([np.sin(phi), np.cos(phi)], -1)
            cs = cs + f[:, None]
            ok = _inside(cs, cd, side, g)
            bs[need[ok]], bd[need[ok]] = cs[ok], cd[ok]
            found[need[ok]] = True
        done = todo[found]
        a_starts[done], a_dirs[done] = s[found], d[found]
        b_starts[done], b_dirs[done] = bs[found], bd[found]
        todo = todo[~found]  # no place for B at that distance: redraw A for these images
    starts, dirs = [a_starts[:, None], b_starts[:, None]], [a_dirs[:, None], b_dirs[:, None]]
    if distractors:
        ds, dd = _placed(rng, n * distractors, contour_length, side, g)
        starts.append(ds.reshape(n, distractors, contour_length, 2))
        dirs.append(dd.reshape(n, distractors, contour_length, 2))
    starts, dirs = np.concatenate(starts, 1), np.concatenate(dirs, 1)
    points = segment_points(starts, starts + g["dash"] * dirs)  # (n, contours, dashes, k, 2)
    canvas = blank(n, side)
    per_image = points.shape[1] * points.shape[2] * points.shape[3]
    stamp(canvas, np.repeat(np.arange(n), per_image), points.reshape(-1, 2),
          square_offsets(g["pen"]))
    e1 = a_starts[:, -1] + g["dash"] * a_dirs[:, -1]
    second = np.where(labels[:, None] == 1, e1, b_starts[:, 0])
    markers = np.stack([a_starts[:, 0], second], 1).reshape(-1, 2)
    stamp(canvas, np.repeat(np.arange(n), 2), markers, disk_offsets(g["radius"]))
    return canvas

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

``joints`` says where each gap points. "forward" (every generator before the knob) carries the
gap straight on along the dash before it, so a contour's start (the next dash in line with the
first) and its end (the last dash off the line of the gap before it) look different next to the
marker: a crop around the second marker alone tells which kind of end it sits on, 60-63 % of the
time (results/calibration/shortcuts/). "centred" turns half way through the gap, on the bisector
of the two dashes' directions: drawn backwards a contour is the same shape, and that crop reads
50.5-52 %.
"""
from __future__ import annotations

import math

import numpy as np

from mvlab.data.procedural.draw import blank, disk_offsets, segment_points, square_offsets, stamp
from mvlab.errors import DataError

MAX_TURN = math.pi / 6  # per dash: curvy enough to fold long contours into the square
PLACEMENT_ATTEMPTS = 24
PLACEMENT_ROUNDS = 1000  # of redrawing A where B found no place: then the layout is impossible
JOINTS = ("centred", "forward")  # where each gap turns (module docstring)
CLASSES = ("disconnected", "connected")


def geometry(side: int) -> dict[str, float]:
    u = side / 64.0
    radius = max(1.5, 2.0 * u)
    return dict(dash=3.0 * u, step=5.0 * u, pen=max(1, round(u)), radius=radius,
                margin=math.ceil(radius) + 1)


def _apart(g: dict, clearance: float, side: int) -> float:
    """Centre-line distance that leaves ``clearance`` px (at 64 px) of background beyond the pen."""
    return g["pen"] + clearance * side / 64.0


def check(side: int, contour_length: int, clearance: float) -> None:
    """Raise ``DataError`` at once where B can never start clear of A: B's start lies as far
    from the first marker as A's far end, so even a straight A must reach past the marker's
    radius, the pen and the clearance (the half pixel is ``_clear``'s sampling margin).
    Contours too long for two to fit apart are found only by trying (``layout``)."""
    if not clearance:
        return
    g = geometry(side)
    longest = (contour_length - 1) * g["step"] + g["dash"]
    needed = g["radius"] + _apart(g, clearance, side) + 0.5
    if longest < needed + 0.5:
        raise DataError(f"data.clearance={clearance:g}: {contour_length}-dash contours at {side} px "
                        f"reach {longest:.1f} px, too short for B's start to keep {needed:.1f} px "
                        f"from A; use a lower data.clearance (0 draws the first generator), "
                        f"longer contours or a higher data.resolution")


def _shapes(rng: np.random.Generator, n: int, length: int, g: dict,
            joints: str) -> tuple[np.ndarray, np.ndarray]:
    """Dash starts (n, length, 2) relative to the contour's start, and unit directions."""
    turns = rng.uniform(-MAX_TURN, MAX_TURN, (n, length - 1))
    angles = rng.uniform(0, 2 * math.pi, (n, 1)) + np.concatenate(
        [np.zeros((n, 1)), np.cumsum(turns, axis=1)], axis=1)
    dirs = np.stack([np.sin(angles), np.cos(angles)], -1)
    if joints == "forward":
        hops = g["step"] * dirs[:, :-1]
    else:  # half the gap along each of the two dashes it joins: symmetric under reversal
        gap = g["step"] - g["dash"]
        hops = g["dash"] * dirs[:, :-1] + gap / 2 * (dirs[:, :-1] + dirs[:, 1:])
    starts = np.concatenate([np.zeros((n, 1, 2)), np.cumsum(hops, axis=1)], 1)
    return starts, dirs


def _extent(starts: np.ndarray, dirs: np.ndarray, g: dict) -> tuple[np.ndarray, np.ndarray]:
    points = np.concatenate([starts, starts + g["dash"] * dirs], axis=-2)
    return points.min(axis=-2), points.max(axis=-2)


def _inside(starts: np.ndarray, dirs: np.ndarray, side: int, g: dict) -> np.ndarray:
    lo, hi = _extent(starts, dirs, g)
    return (lo >= g["margin"]).all(-1) & (hi <= side - 1 - g["margin"]).all(-1)


def _placed(rng: np.random.Generator, n: int, length: int, side: int, g: dict, joints: str):
    """``n`` contours placed uniformly where they fit whole inside the margins."""
    starts, dirs = np.empty((n, length, 2)), np.empty((n, length, 2))
    todo = np.arange(n)
    room = side - 1 - 2 * g["margin"]
    for _ in range(1000):
        s, d = _shapes(rng, todo.size, length, g, joints)
        lo, hi = _extent(s, d, g)
        fits = ((hi - lo) <= room).all(-1)
        offset = g["margin"] - lo + rng.random((todo.size, 2)) * (room - (hi - lo))
        starts[todo[fits]], dirs[todo[fits]] = (s + offset[:, None])[fits], d[fits]
        todo = todo[~fits]
        if not todo.size:
            return starts, dirs
    raise DataError(f"data.contour_length={length}: contours this long do not fit a {side} px "
                    f"image; use a shorter contour_length or a higher resolution")


def layout(rng: np.random.Generator, labels: np.ndarray, side: int, *, contour_length: int,
           distractors: int, clearance: float = 0.0,
           joints: str) -> dict[str, np.ndarray]:
    """Where everything goes for ``labels`` (1 = connected): dash starts and directions
    ``(n, contours, dashes, 2)`` (A, B, then the distractors) and the two markers ``(n, 2, 2)``.

    ``clearance`` (px at 64 px, scaled with the side) keeps B that far beyond the pen from A, and
    every contour that far beyond the pen and the marker from a marker spot that is not its own
    (A's two ends and B's start, in both classes: what the classes share stays shared). At 0
    (the first generator) B may cross A and a distractor may run through a marker; a
    "disconnected" image whose second marker lands on A then shows a joined pair, and a label
    the pixels do not carry caps every network at the same accuracy (``overlaps``). ``joints``
    has no default: "forward" draws what mvlab drew before the knob, "centred" today's default
    (module docstring)."""
    n, g = labels.size, geometry(side)
    apart = _apart(g, clearance, side)
    a_starts, a_dirs = np.empty((n, contour_length, 2)), np.empty((n, contour_length, 2))
    b_starts, b_dirs = np.empty_like(a_starts), np.empty_like(a_dirs)
    todo = np.arange(n)
    for _ in range(PLACEMENT_ROUNDS):
        if not todo.size:
            break
        s, d = _placed(rng, todo.size, contour_length, side, g, joints)
        e0 = s[:, 0]
        reach = np.linalg.norm(s[:, -1] + g["dash"] * d[:, -1] - e0, axis=-1)
        found = np.zeros(todo.size, dtype=bool)
        bs, bd = np.empty_like(s), np.empty_like(d)
        for _ in range(PLACEMENT_ATTEMPTS):
            need = np.flatnonzero(~found)
            if not need.size:
                break
            cs, cd = _shapes(rng, need.size, contour_length, g, joints)
            phi = rng.uniform(0, 2 * math.pi, need.size)
            f = e0[need] + reach[need, None] * np.stack([np.sin(phi), np.cos(phi)], -1)
            cs = cs + f[:, None]
            ok = _inside(cs, cd, side, g)
            if clearance:
                ok &= _clear(cs, cd, s[need], d[need], g, apart)
            bs[need[ok]], bd[need[ok]] = cs[ok], cd[ok]
            found[need[ok]] = True
        done = todo[found]
        a_starts[done], a_dirs[done] = s[found], d[found]
        b_starts[done], b_dirs[done] = bs[found], bd[found]
        todo = todo[~found]  # no place for B at that distance: redraw A for these images
    if todo.size:
        raise DataError(f"data.clearance={clearance}: no room for two {contour_length}-dash "
                        f"contours that far apart in a {side} px image; use a lower "
                        f"data.clearance or a higher data.resolution (at 64 px and clearance "
                        f"2, contours of 2 to 13 dashes fit; below 64 px markers and pen do not "
                        f"shrink)")
    e1 = a_starts[:, -1] + g["dash"] * a_dirs[:, -1]
    markers = np.stack([a_starts[:, 0], np.where(labels[:, None] == 1, e1, b_starts[:, 0])], 1)
    starts, dirs = [a_starts[:, None], b_starts[:, None]], [a_dirs[:, None], b_dirs[:, None]]
    if distractors:
        ds, dd = _placed(rng, n * distractors, contour_length, side, g, joints)
        if clearance:
            # Clear of both places the second marker could be, in both classes: a distractor
            # touching the unmarked one only in "disconnected" images would give the label away.
            spots = np.stack([a_starts[:, 0], e1, b_starts[:, 0]], 1)
            ds, dd = _clear_of_markers(rng, ds, dd, np.repeat(spots, distractors, 0),
                                       g["radius"] + apart, side, g, joints)
        starts.append(ds.reshape(n, distractors, contour_length, 2))
        dirs.append(dd.reshape(n, distractors, contour_length, 2))
    return {"starts": np.concatenate(starts, 1), "dirs": np.concatenate(dirs, 1),
            "markers": markers, "labels": labels}


def _ink(starts: np.ndarray, dirs: np.ndarray, g: dict, spacing: float = 0.5) -> np.ndarray:
    """Points every ``spacing`` px along every dash of each contour: ``(n, points, 2)``."""
    points = segment_points(starts, starts + g["dash"] * dirs, spacing)
    return points.reshape(points.shape[0], -1, 2)


def _gap(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The smallest distance between point sets ``p`` (n, a, 2) and ``q`` (n, b, 2), per image."""
    square = (p ** 2).sum(-1)[:, :, None] + (q ** 2).sum(-1)[:, None] - 2 * p @ q.transpose(0, 2, 1)
    return np.sqrt(np.maximum(square.min(axis=(1, 2)), 0.0))


def _clear(bs, bd, a_s, a_d, g, apart) -> np.ndarray:
    """Whether candidate B keeps ``apart`` beyond the pen from A, and a marker's radius more
    from the markers it does not carry (A's ends e0, e1 for B; B's start f for A), per image."""
    # Points 1 px apart: the true gap is at most 0.5 px below the one measured, so ask that more.
    b_ink, a_ink = _ink(bs, bd, g, 1.0), _ink(a_s, a_d, g, 1.0)
    a_ends = np.stack([a_s[:, 0], a_s[:, -1] + g["dash"] * a_d[:, -1]], 1)
    apart = apart + 0.5
    return ((_gap(b_ink, a_ink) >= apart)
            & (_gap(b_ink, a_ends) >= g["radius"] + apart)
            & (_gap(a_ink, bs[:, :1]) >= g["radius"] + apart))


def _clear_of_markers(rng, starts, dirs, markers, distance, side, g, joints):
    """Distractors redrawn until none comes within ``distance`` of a marker spot of its image."""
    todo = np.arange(starts.shape[0])
    for _ in range(1000):
        near = _gap(_ink(starts[todo], dirs[todo], g, 1.0), markers[todo]) < distance + 0.5
        todo = todo[near]
        if not todo.size:
            return starts, dirs
        starts[todo], dirs[todo] = _placed(rng, todo.size, starts.shape[1], side, g, joints)
    raise DataError(f"data.distractors: no room for {starts.shape[1]}-dash distractors clear of "
                    f"the markers in a {side} px image; use a lower data.clearance or a shorter "
                    f"data.contour_length")


def overlaps(spec: dict, side: int) -> dict[str, np.ndarray]:
    """Per image of a ``layout``: ``contours_touch`` (A and B drawn pixels adjacent or shared)
    and ``marker_touches_other`` (a marker's disk touches a contour it does not sit on: B or a
    distractor for the first marker; for the second, A in a "disconnected" image and B in a
    "connected" one, besides the distractors). Either can make the pixels say "connected"
    where the label says not, or blur the marked pair."""
    g = geometry(side)
    contours = [_ink(spec["starts"][:, c], spec["dirs"][:, c], g)
                for c in range(spec["starts"].shape[1])]
    touch = g["pen"] + 1.0  # centre lines this close leave no background pixel between
    reach = g["radius"] + g["pen"] / 2 + 1.0
    first, second = spec["markers"][:, :1], spec["markers"][:, 1:]
    own = np.where(spec["labels"] == 1, 0, 1)  # the contour the second marker sits on
    hit = _gap(first, contours[1]) < reach
    hit |= np.where(own == 1, _gap(second, contours[0]), _gap(second, contours[1])) < reach
    for c in range(2, len(contours)):  # the distractors
        hit |= np.minimum(_gap(first, contours[c]), _gap(second, contours[c])) < reach
    return {"contours_touch": _gap(contours[0], contours[1]) < touch,
            "marker_touches_other": hit}


def draw(spec: dict[str, np.ndarray], side: int) -> np.ndarray:
    """Images (n, side, side) uint8 of a ``layout``."""
    g, starts, dirs = geometry(side), spec["starts"], spec["dirs"]
    n = starts.shape[0]
    points = segment_points(starts, starts + g["dash"] * dirs)  # (n, contours, dashes, k, 2)
    canvas = blank(n, side)
    per_image = points.shape[1] * points.shape[2] * points.shape[3]
    stamp(canvas, np.repeat(np.arange(n), per_image), points.reshape(-1, 2),
          square_offsets(g["pen"]))
    stamp(canvas, np.repeat(np.arange(n), 2), spec["markers"].reshape(-1, 2),
          disk_offsets(g["radius"]))
    return canvas


def pair_lengths(rng: np.random.Generator, n: int, shortest: int, longest: int) -> np.ndarray:
    """Dashes a contour for each of ``n`` images: uniform over ``shortest..longest``, drawn once
    per pair of consecutive images. Labels alternate 0, 1 (``generate_split``), so both classes
    get the same lengths and a length says nothing of the label."""
    return np.repeat(rng.integers(shortest, longest + 1, (n + 1) // 2), 2)[:n]


def generate(rng: np.random.Generator, labels: np.ndarray, side: int, *, contour_length: int,
             distractors: int, clearance: float = 0.0, joints: str,
             shortest_contour: int = 0) -> np.ndarray:
    """Images (n, side, side) uint8 for ``labels`` (1 = connected, 0 = disconnected).

    ``shortest_contour`` 0: every contour has ``contour_length`` dashes. Otherwise each image's
    contours (A, B and its distractors alike) have a length drawn by ``pair_lengths`` from
    ``shortest_contour..contour_length`` (docs/data.md, "Mixed lengths": meant to grade how
    far a network traces; at 950 steps it stayed on the plateau)."""
    if not shortest_contour:  # draws nothing extra: the pixels of every generator before
        return draw(layout(rng, labels, side, contour_length=contour_length,
                           distractors=distractors, clearance=clearance, joints=joints), side)
    lengths = pair_lengths(rng, labels.size, shortest_contour, contour_length)
    images = np.empty((labels.size, side, side), dtype=np.uint8)
    for length in np.unique(lengths):
        at = np.flatnonzero(lengths == length)
        images[at] = draw(layout(rng, labels[at], side, contour_length=int(length),
                                 distractors=distractors, clearance=clearance, joints=joints),
                          side)
    return images

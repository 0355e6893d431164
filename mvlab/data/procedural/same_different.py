"""Same-different (SVRT problem 1, Fleuret et al. 2011): are the two framed glyphs identical?

The image is a grid of slots. Two slots at least half the grid apart (Chebyshev distance
>= grid // 2) hold framed glyphs; ``distractors`` other slots hold unframed ones. A glyph is a
``glyph_cells`` x ``glyph_cells`` binary pattern with exactly half its cells on. Label 1 ("same"):
the second framed glyph is a copy of the first; label 0 ("different"): the copy with
``changed_cells`` on cells and as many off cells swapped, so both classes have the same ink.
Each glyph alone is a random pattern: only comparing the two far-apart frames answers it.

Geometry scales with the side ``S`` (unit ``u = S / 64``): cells of round(2u) px, a pen (frame)
of round(u) px with a gap of one pen to the glyph, slots of glyph + frame + 2 px.
"""
from __future__ import annotations

import numpy as np

from mvlab.data.procedural.draw import INK, blank, stamp
from mvlab.errors import DataError

CLASSES = ("different", "same")


def geometry(side: int, glyph_cells: int) -> dict[str, int]:
    u = side / 64.0
    cell, pen = max(1, round(2 * u)), max(1, round(u))
    glyph = glyph_cells * cell
    box = glyph + 4 * pen  # frame and gap on both sides
    grid = side // (box + 2)
    return dict(cell=cell, pen=pen, glyph=glyph, box=box, grid=grid, slot=side // max(grid, 1))


def check(side: int, glyph_cells: int, changed_cells: int, distractors: int) -> None:
    """Raise ``DataError`` when the knobs cannot make an image of ``side`` px."""
    g = geometry(side, glyph_cells)
    if g["grid"] < 2:
        raise DataError(f"data.glyph_cells={glyph_cells}: two framed glyphs of {g['box']} px "
                        f"do not fit side by side in {side} px; use fewer cells or a higher "
                        f"resolution")
    if 2 + distractors > g["grid"] ** 2:
        raise DataError(f"data.distractors={distractors}: a {side} px image has "
                        f"{g['grid'] ** 2} glyph slots at glyph_cells={glyph_cells}, 2 of them "
                        f"framed; use at most {g['grid'] ** 2 - 2} distractors")
    if not 1 <= changed_cells <= glyph_cells ** 2 // 2:
        raise DataError(f"data.changed_cells={changed_cells}: must be in "
                        f"1..{glyph_cells ** 2 // 2} (half the cells of a "
                        f"{glyph_cells}x{glyph_cells} glyph)")


def _glyphs(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
    """Random glyphs (..., cells*cells) bool with exactly half (rounded down) cells on."""
    ranks = rng.random(shape + (cells * cells,)).argsort(-1).argsort(-1)
    return ranks < (cells * cells) // 2


def _swap_cells(rng: np.random.Generator, glyphs: np.ndarray, k: int) -> np.ndarray:
    """Each glyph with ``k`` random on cells turned off and ``k`` random off cells turned on."""
    keys = rng.random(glyphs.shape)
    on_rank = np.where(glyphs, keys, 2.0).argsort(-1).argsort(-1)
    off_rank = np.where(~glyphs, keys, 2.0).argsort(-1).argsort(-1)
    return (glyphs & ~(on_rank < k)) | (off_rank < k)


def generate(rng: np.random.Generator, labels: np.ndarray, side: int, *, glyph_cells: int,
             changed_cells: int, distractors: int) -> np.ndarray:
    """Images (n, side, side) uint8 for ``labels`` (1 = same, 0 = different)."""
    check(side, glyph_cells, changed_cells, distractors)
    n, g = labels.size, geometry(side, glyph_cells)
    grid, slots = g["grid"], g["grid"] ** 2
    sy, sx = np.divmod(np.arange(slots), grid)
    first = rng.random((n, slots)).argmax(1)
    far = np.maximum(np.abs(sy[first][:, None] - sy), np.abs(sx[first][:, None] - sx)) >= grid // 2
    second = np.where(far, rng.random((n, slots)), -1.0).argmax(1)
    keys = rng.random((n, slots))
    keys[np.arange(n), first] = keys[np.arange(n), second] = -1.0
    chosen = np.concatenate([first[:, None], second[:, None],
                             np.argsort(-keys, 1)[:, :distractors]], 1)  # (n, 2 + distractors)
    jitter = rng.integers(0, g["slot"] - g["box"] + 1, chosen.shape + (2,))
    boxes = np.stack([sy[chosen], sx[chosen]], -1) * g["slot"] + jitter  # box top-left (y, x)

    marked = _glyphs(rng, (n,), glyph_cells)
    changed = _swap_cells(rng, marked, changed_cells)
    copy = np.where(labels[:, None] == 1, marked, changed)
    glyphs = np.concatenate([marked[:, None], copy[:, None],
                             _glyphs(rng, (n, distractors), glyph_cells)], 1)
    cells = glyphs.reshape(n, -1, glyph_cells, glyph_cells)
    bitmaps = cells.repeat(g["cell"], 2).repeat(g["cell"], 3)

    canvas = blank(n, side)
    inset = 2 * g["pen"]
    r = np.arange(g["glyph"])
    ys = (boxes[..., 0] + inset)[..., None, None] + r[:, None]
    xs = (boxes[..., 1] + inset)[..., None, None] + r[None, :]
    canvas[np.arange(n)[:, None, None, None], ys, xs] = bitmaps.astype(np.uint8) * INK
    ring = np.ones((g["box"], g["box"]), dtype=bool)
    ring[g["pen"]:-g["pen"], g["pen"]:-g["pen"]] = False
    frame = np.argwhere(ring)
    stamp(canvas, np.repeat(np.arange(n), 2), boxes[:, :2].reshape(-1, 2).astype(float), frame)
    return canvas

"""Vectorised drawing on a batch of grayscale canvases: every stroke of every image in one
fancy-indexed write, never a Python loop over pixels (or over images)."""
from __future__ import annotations

import numpy as np

INK = 255


def blank(n: int, side: int) -> np.ndarray:
    return np.zeros((n, side, side), dtype=np.uint8)


def square_offsets(width: int) -> np.ndarray:
    """(k, 2) integer offsets of a ``width`` x ``width`` pen centred on a point."""
    r = np.arange(width) - (width - 1) // 2
    return np.stack(np.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)


def disk_offsets(radius: float) -> np.ndarray:
    """(k, 2) integer offsets (dy, dx) within ``radius`` of a point."""
    r = int(np.ceil(radius))
    ys, xs = np.mgrid[-r:r + 1, -r:r + 1]
    inside = ys ** 2 + xs ** 2 <= radius ** 2 + 1e-9
    return np.stack([ys[inside], xs[inside]], -1)


def stamp(canvas: np.ndarray, image: np.ndarray, points: np.ndarray, offsets: np.ndarray,
          value: int = INK) -> None:
    """Set ``value`` at ``points`` (m, 2) (y, x floats, rounded) + each offset, on image
    ``image[j]`` of the batch ``canvas``; pixels off the canvas are dropped."""
    side = canvas.shape[1]
    centre = np.floor(points + 0.5).astype(np.int64)
    ys = (centre[:, None, 0] + offsets[None, :, 0]).ravel()
    xs = (centre[:, None, 1] + offsets[None, :, 1]).ravel()
    which = np.repeat(np.asarray(image, dtype=np.int64), offsets.shape[0])
    keep = (ys >= 0) & (ys < side) & (xs >= 0) & (xs < side)
    canvas.reshape(-1)[(which[keep] * side + ys[keep]) * side + xs[keep]] = value


def segment_points(starts: np.ndarray, ends: np.ndarray, spacing: float = 0.5) -> np.ndarray:
    """Points every ``spacing`` px along segments ``starts`` -> ``ends`` (..., 2): shape
    (..., k, 2), k fixed by the longest segment so the result stays one array."""
    length = float(np.sqrt(((ends - starts) ** 2).sum(-1)).max(initial=0.0))
    t = np.linspace(0.0, 1.0, max(2, int(np.ceil(length / spacing)) + 1))
    return starts[..., None, :] + (ends - starts)[..., None, :] * t[:, None]

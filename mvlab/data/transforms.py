"""Transforms. Two families with the same geometry:

* batch transforms on uint8 tensors (the cache path): a whole batch of stored ``S x S`` images is
  random-resized-cropped and flipped in one ``grid_sample`` call (per-sample boxes), or
  center-cropped by slicing, then normalised to float. Box parameters come from a
  ``torch.Generator`` on the CPU, so the augmentation stream is a pure function of its seed on any
  device.
* per-image PIL transforms (the direct JPEG path) from timm's transform factory: random resized
  crop + flip for training, resize to ``resolution / crop_pct`` + center crop for evaluation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sample_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                      ratio: tuple[float, float], generator: torch.Generator,
                      attempts: int = 10) -> torch.Tensor:
    """Random-resized-crop boxes ``(x0, y0, w, h)`` in pixels, shape (n, 4), float64.

    The usual rule, vectorised: up to ``attempts`` draws of (area fraction, log aspect ratio) per
    image, the first that fits wins; images with none that fits get the largest centered box with
    the aspect ratio clamped into ``ratio``."""
    area = float(height * width)
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    u = torch.rand(n, attempts, 4, generator=generator, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * u[..., 1])
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    fits = (w >= 1) & (h >= 1) & (w <= width) & (h <= height)
    first = torch.where(fits.any(1), fits.to(torch.int8).argmax(1), torch.full((n,), -1))
    pick = first.clamp(min=0).unsqueeze(1)
    w_sel, h_sel = w.gather(1, pick).squeeze(1), h.gather(1, pick).squeeze(1)
    x_u, y_u = u[..., 2].gather(1, pick).squeeze(1), u[..., 3].gather(1, pick).squeeze(1)
    x0 = torch.floor(x_u * (width - w_sel + 1)).clamp(max=width - w_sel)
    y0 = torch.floor(y_u * (height - h_sel + 1)).clamp(max=height - h_sel)

    fallback = first < 0
    if fallback.any():
        in_ratio = width / height
        if in_ratio < ratio[0]:
            fw, fh = width, round(width / ratio[0])
        elif in_ratio > ratio[1]:
            fw, fh = round(height * ratio[1]), height
        else:
            fw, fh = width, height
        w_sel[fallback], h_sel[fallback] = float(fw), float(fh)
        x0[fallback], y0[fallback] = float((width - fw) // 2), float((height - fh) // 2)
    return torch.stack([x0, y0, w_sel, h_sel], dim=1)


def crop_flip_resize(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each uint8 NCHW image to its box, flip it if ``flips``, resize (bilinear) to ``size``.

    Returns float32 in [0, 255]. One ``grid_sample`` call for the whole batch."""
    n, _, height, width = images.shape
    x0, y0, w, h = boxes.to(torch.float64).unbind(1)
    flip = torch.where(flips.to(torch.bool), -1.0, 1.0).to(torch.float64)
    # Normalised coordinates with align_corners=False: -1 and 1 are the outer pixel edges, and
    # output pixel centres sit at (2k + 1) / size - 1. The boxes are axis-aligned, so the grid is
    # separable: x depends on the column only, y on the row only (no affine_grid matmul needed).
    centres = (torch.arange(size, dtype=torch.float64) * 2 + 1) / size - 1
    gx = ((x0 + w / 2) / width * 2 - 1)[:, None] + (w / width * flip)[:, None] * centres[None, :]
    gy = ((y0 + h / 2) / height * 2 - 1)[:, None] + (h / height)[:, None] * centres[None, :]
    gx = gx.to(device=images.device, dtype=torch.float32)
    gy = gy.to(device=images.device, dtype=torch.float32)
    grid = torch.stack([gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)], dim=-1)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Center ``size`` x ``size`` crop of uint8 NCHW images (a view, no copy)."""
    height, width = images.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top:top + size, left:left + size]


class Normalize:
    """(x / 255 - mean) / std for float or uint8 NCHW batches, folded into one multiply-add."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, -1, 1, 1)
        self.shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        scale = self.scale.to(images.device)
        shift = self.shift.to(images.device)
        return torch.addcmul(shift, images.float(), scale)


def pil_transform(train: bool, resolution: int, crop_pct: float, scale: tuple[float, float],
                  ratio: tuple[float, float], hflip: float, mean, std):
    """timm's transform for one PIL image (the direct path): no colour jitter, no auto-augment,
    so it matches the cache path's random-resized-crop + flip."""
    from timm.data import create_transform

    if train:
        return create_transform(resolution, is_training=True, scale=scale, ratio=ratio, hflip=hflip,
                                vflip=0.0, color_jitter=None, auto_augment=None, re_prob=0.0,
                                interpolation="bilinear", mean=mean, std=std)
    return create_transform(resolution, is_training=False, crop_pct=crop_pct,
                            interpolation="bicubic", mean=mean, std=std)

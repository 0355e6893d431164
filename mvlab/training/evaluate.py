"""Top-1/top-5 accuracy and loss on a held-out or validation loader."""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from mvlab.training.runtime import autocast


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, precision: str = "fp32",
             channels_last: bool = False) -> dict[str, float]:
    """Accuracy in percent (``top1``, ``top5``; top-5 is top-k with k = min(5, classes)), mean
    cross-entropy ``loss`` without label smoothing, and the number of ``images``."""
    was_training = model.training
    model.eval()
    correct1 = torch.zeros((), dtype=torch.long, device=device)
    correct5 = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    try:
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                logits = model(images)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").double()
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            hits = top.eq(targets[:, None])
            correct1 += hits[:, 0].sum()
            correct5 += hits.any(dim=1).sum()
            count += targets.numel()
    finally:
        model.train(was_training)
    if count == 0:
        return {"top1": float("nan"), "top5": float("nan"), "loss": float("nan"), "images": 0}
    return {"top1": 100.0 * correct1.item() / count, "top5": 100.0 * correct5.item() / count,
            "loss": loss_sum.item() / count, "images": count}

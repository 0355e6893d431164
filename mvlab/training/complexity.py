"""Parameters and multiply-accumulates of any model the trainer or the benchmark sees.

mvlab models carry their spec, so their complexity is analytic (``mvlab.models.complexity``:
``macs`` without the selective scan, as the paper's ptflops counted, and ``macs_with_scan``).
Other timm models are counted by running one image through ``torch.utils.flop_counter``.
"""
from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_complexity(model: nn.Module, img_size: int, num_classes: int,
                     in_chans: int = 3) -> dict[str, int | str]:
    """``params``, ``macs``, ``macs_with_scan`` and how the MACs were obtained (``macs_method``)."""
    spec = getattr(model, "spec", None)
    if isinstance(spec, str) and spec:
        from mvlab.models import complexity

        c = complexity(spec, img_size=img_size, num_classes=num_classes)
        return {"params": int(c.params), "macs": int(c.macs),
                "macs_with_scan": int(c.macs_with_scan), "macs_method": "analytic"}
    macs = counted_macs(model, img_size, in_chans)
    return {"params": count_params(model), "macs": macs, "macs_with_scan": macs,
            "macs_method": "flop_counter"}


@torch.no_grad()
def counted_macs(model: nn.Module, img_size: int, in_chans: int = 3) -> int:
    """MACs of one forward pass at batch 1 (half of torch's FLOP count of matmuls/convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters())
    x = torch.zeros(1, in_chans, img_size, img_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops() // 2)

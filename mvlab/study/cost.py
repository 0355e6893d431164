"""What a point costs, known without training or timing it: analytic params and MACs, and the
classes its data selects. The search space samples under a params/MACs band with these, and a
trial records them before it measures anything."""
from __future__ import annotations

from typing import Any

from mvlab import records


def complexity_of(spec: str, img_size: int, num_classes: int = 1000) -> dict[str, float]:
    """``params``, ``macs`` (the paper's FLOPs convention: scan excluded) and ``macs_with_scan``
    of ``spec`` for one ``img_size`` image; analytic, no model is built."""
    from mvlab.models.complexity import complexity

    cost = complexity(spec, img_size=img_size, num_classes=num_classes)
    return {records.PARAMS: float(cost.params), records.MACS: float(cost.macs),
            records.MACS_WITH_SCAN: float(cost.macs_with_scan)}


def num_classes_of(data_cfg: Any) -> int:
    """Classes a data config selects (lists folders only, decodes nothing)."""
    from mvlab.data import select_subset

    return len(select_subset(data_cfg).classes)

"""The ``data:`` and ``train:`` sections of a study: which config class each is, and building one
with its own validation errors pointed at the offending key.

Apart from the schema so that the search space, which rebuilds these configs for every point,
does not import the schema back."""
from __future__ import annotations

import re
from typing import Any

from mvlab.errors import UserError


def config_class(section: str) -> type:
    """The dataclass behind a study's ``data:`` or ``train:`` block."""
    if section == "data":
        from mvlab.data.config import DataConfig

        return DataConfig
    from mvlab.training.config import TrainConfig

    return TrainConfig


def construct_config(cls: type, kwargs: dict[str, Any], fail: Any, section: str) -> Any:
    """``cls(**kwargs)``; its own validation errors are re-raised at the offending key."""
    try:
        return cls(**kwargs)
    except (UserError, TypeError, ValueError) as exc:
        text = str(exc)
        mentioned = re.search(rf"\b{section}\.(\w+)", text)
        key = mentioned[1] if mentioned and mentioned[1] in kwargs else None
        if key is None:
            key = next((k for k in kwargs if re.search(rf"\b{k}\b", text)), None)
        raise fail(key, text) from None

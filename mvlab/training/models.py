"""Turn what a user typed (preset, spec string, timm name) into a model, with one error path."""
from __future__ import annotations

from torch import nn

from mvlab.errors import UserError


def make_model(name: str, num_classes: int, in_chans: int = 3,
               scan_backend: str = "auto") -> nn.Module:
    """An mvlab preset or spec string (scan routed to ``scan_backend``) or any timm model name.

    Raises ``SpecError`` for a malformed spec and ``UserError`` for a name neither mvlab nor timm
    knows."""
    import timm

    from mvlab.models import create_model, set_scan_backend

    try:
        model = create_model(name, num_classes=num_classes, in_chans=in_chans)
    except RuntimeError as exc:
        if "unknown model" not in str(exc).lower():
            raise
        close = timm.list_models(f"*{name[:6]}*")[:6] if name else []
        hint = f" (timm has e.g. {', '.join(close)})" if close else ""
        raise UserError(f"{name!r} is neither an mvlab preset/spec nor a timm model name{hint}; "
                        f"mvlab presets: tiny, proxy, T, T2, S, B, L, L2, L3") from None
    if getattr(model, "spec", None):
        set_scan_backend(model, scan_backend)
    return model

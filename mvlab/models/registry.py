"""The builders: ``build_model`` for specs, ``create_model`` for anything.

The timm names themselves (``mambavision_t`` ... ``mambavision_spec``) are registered in
``mvlab.models.mambavision``, which ``import mvlab.models`` imports.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from mvlab.grammar import ModelSpec, parse_spec, preset_name
from mvlab.models.mambavision import MambaVision, create_mambavision


def build_model(spec: ModelSpec | str, num_classes: int = 1000, in_chans: int = 3,
                scan_backend: str = "auto", **timm_kwargs: Any) -> nn.Module:
    """Build the network a spec (ModelSpec, spec string or preset name) describes.

    ``timm_kwargs`` go to timm's builder: ``features_only``, ``out_indices``, ``drop_rate``,
    ``drop_path_rate`` (overrides the spec's drop_path), ``global_pool``. The model's canonical
    spec is ``model.spec``. Raises mvlab.errors.SpecError for a bad spec.
    """
    parsed = parse_spec(spec)
    preset = preset_name(spec) if isinstance(spec, str) else None
    variant = f"mambavision_{preset.lower()}" if preset else "mambavision_spec"
    return create_mambavision(variant, parsed, num_classes=num_classes, in_chans=in_chans,
                              scan_backend=scan_backend, **timm_kwargs)


def create_model(name_or_spec: ModelSpec | str, **kwargs: Any) -> nn.Module:
    """An mvlab preset, a spec string, a ModelSpec or any timm model name.

    ``pretrained=True`` works for timm names that have downloadable weights; for MambaVision
    presets download the official file and use ``mvlab.load_pretrained``.
    """
    import timm

    if isinstance(name_or_spec, ModelSpec) or "=" in name_or_spec:
        return build_model(name_or_spec, **kwargs)
    if preset_name(name_or_spec) is not None and not kwargs.get("pretrained"):
        return build_model(name_or_spec, **kwargs)
    return timm.create_model(name_or_spec, **kwargs)


def set_scan_backend(model: nn.Module, name: str) -> None:
    """Route the scan of every mixer in ``model`` (a MambaVision or a timm wrapper of one)."""
    for module in model.modules():
        if isinstance(module, MambaVision):
            module.set_scan_backend(name)
            return
    raise TypeError(f"{type(model).__name__} holds no MambaVision network")

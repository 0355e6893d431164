"""timm registration and the builders: ``build_model`` for specs, ``create_model`` for anything.

After ``import mvlab`` timm knows ``mambavision_t``, ``_t2``, ``_s``, ``_b``, ``_l``, ``_l2``,
``_l3``, ``mambavision_tiny`` (CPU test size), ``mambavision_proxy`` (the sweep's default proxy)
and ``mambavision_spec`` (any grammar spec, passed as ``spec=...``).
"""
from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from mvlab.grammar import PRESETS, ModelSpec, format_spec, parse_spec, preset_name
from mvlab.models.checkpoint import checkpoint_filter_fn
from mvlab.models.mambavision import MambaVision

_HF = "https://huggingface.co/nvidia/{repo}/resolve/main/{file}"


def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed.conv_down.0",
        "classifier": "head", "crop_mode": "center",
        "license": "nvidia-source-code-license-nc (weights)", **kwargs,
    }


# Official ImageNet-1K weights (NVIDIA's release on the Hugging Face hub) and the eval crops NVIDIA
# published with them. Nothing is bundled: download the .pth.tar and call
# mvlab.load_pretrained(model, path), or pretrained=True where the hub is reachable.
default_cfgs = generate_default_cfgs({
    "mambavision_t.in1k": _cfg(_HF.format(repo="MambaVision-T-1K", file="mambavision_tiny_1k.pth.tar"), crop_pct=1.0),
    "mambavision_t2.in1k": _cfg(_HF.format(repo="MambaVision-T2-1K", file="mambavision_tiny2_1k.pth.tar"), crop_pct=0.98),
    "mambavision_s.in1k": _cfg(_HF.format(repo="MambaVision-S-1K", file="mambavision_small_1k.pth.tar"), crop_pct=0.93),
    "mambavision_b.in1k": _cfg(_HF.format(repo="MambaVision-B-1K", file="mambavision_base_1k.pth.tar"), crop_pct=1.0),
    "mambavision_l.in1k": _cfg(_HF.format(repo="MambaVision-L-1K", file="mambavision_large_1k.pth.tar"), crop_pct=1.0),
    "mambavision_l2.in1k": _cfg(_HF.format(repo="MambaVision-L2-1K", file="mambavision_large2_1k.pth.tar"), crop_pct=1.0),
    "mambavision_l3.in21k_ft_in1k": _cfg(crop_pct=1.0),
    "mambavision_tiny.untrained": _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
    "mambavision_proxy.untrained": _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
    "mambavision_spec.untrained": _cfg(),
})


def _create(variant: str, spec: ModelSpec | str, pretrained: bool = False,
            **kwargs: Any) -> MambaVision:
    return build_model_with_cfg(
        MambaVision, variant, pretrained, spec=spec,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"),
        **kwargs)


def _preset_fn(timm_name: str, preset: str):
    def create(pretrained: bool = False, **kwargs: Any) -> MambaVision:
        return _create(timm_name, PRESETS[preset], pretrained, **kwargs)
    create.__name__ = timm_name
    create.__qualname__ = timm_name
    create.__doc__ = f"MambaVision preset {preset}: {format_spec(PRESETS[preset])}"
    create.__module__ = __name__
    return create


TIMM_NAMES = {f"mambavision_{name.lower()}": name for name in PRESETS}
for _name, _preset in TIMM_NAMES.items():
    globals()[_name] = register_model(_preset_fn(_name, _preset))


@register_model
def mambavision_spec(pretrained: bool = False, spec: ModelSpec | str = "T",
                     **kwargs: Any) -> MambaVision:
    """Any grammar spec (string, ModelSpec or preset name) as a timm model."""
    return _create("mambavision_spec", spec, pretrained, **kwargs)


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
    return _create(variant, parsed, num_classes=num_classes, in_chans=in_chans,
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

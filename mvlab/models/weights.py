"""Loading model weights: NVIDIA's released files and mvlab's own.

Only a network's tensors; a run's resume state (optimiser, scheduler, RNG, epoch) is
``mvlab.training.checkpoint``.

Accepted files: ``.pth.tar``/``.pth``/``.pt`` holding a plain state dict or a dict with
``state_dict`` (or ``model``, ``state_dict_ema``), and ``.safetensors``. A ``module.`` prefix
(DataParallel) is stripped. A file that does not fit the model fails with a message listing the
missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from mvlab.errors import UserError


class CheckpointError(UserError):
    """A weights file that cannot be read or does not fit the model."""


_CONTAINER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint file holds, with container dicts and ``module.`` unwrapped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            state = load_file(path, device="cpu")
        except Exception as exc:  # noqa: BLE001 - any read failure is a bad file for the user
            raise CheckpointError(f"cannot read safetensors file {path!r}: {exc}") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"cannot read checkpoint {path!r}: {exc}") from None
    return checkpoint_filter_fn(state)


def checkpoint_filter_fn(state: Mapping, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Unwrap a loaded checkpoint into a flat state dict (timm's ``pretrained_filter_fn`` too)."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(state).__name__}, not a state dict")
    for key in _CONTAINER_KEYS:
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def describe_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor],
                      limit: int = 8) -> str | None:
    """Why ``state`` does not fit ``model`` (missing/unexpected/mis-shaped keys), or None."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts) or None


def load_pretrained(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load a weights file into ``model`` in place and return the model.

    With ``strict=True`` every key must match in name and shape. With ``strict=False`` keys
    that do not fit (e.g. a 1000-class head on a 10-class model) are skipped and reported by a
    warning. Raises CheckpointError naming the offending keys and shapes.
    """
    state = read_state_dict(path)
    problem = describe_mismatch(model, state)
    spec = getattr(model, "spec", None)
    if problem and strict:
        hint = f" The model's spec is: {spec}." if spec else ""
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} does not fit the model: "
                              f"{problem}.{hint} Build the matching preset, or pass strict=False "
                              f"to load only the keys that fit.")
    if problem:
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        import warnings

        warnings.warn(f"load_pretrained: skipped keys that do not fit: {problem}", stacklevel=2)
    model.load_state_dict(state, strict=strict)
    return model

"""mvlab: a lab for ablating hybrid Mamba-Transformer vision backbones.

``import mvlab`` is light (no torch): the model functions below load ``mvlab.models`` on first
use, so the torch-free parts (``mvlab.grammar``, ``mvlab.analysis``, ``mvlab --help``,
``mvlab sweep --check``) start in a fraction of a second. ``import mvlab.models`` (or the first
``mvlab.build_model``) registers the ``mambavision_*`` names with timm."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module defining it, imported on first attribute access (PEP 562).
_LAZY = {
    "build_model": "mvlab.models",
    "create_model": "mvlab.models",
    "load_pretrained": "mvlab.models",
    "parse_spec": "mvlab.grammar",
    "format_spec": "mvlab.grammar",
}

if TYPE_CHECKING:
    from mvlab.grammar import format_spec, parse_spec
    from mvlab.models import build_model, create_model, load_pretrained

__all__ = ["build_model", "create_model", "parse_spec", "format_spec", "load_pretrained",
           "__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    # Cached so later lookups are plain attribute reads, not another __getattr__ call.
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

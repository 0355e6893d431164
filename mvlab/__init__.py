"""mvlab: a lab for ablating hybrid Mamba-Transformer vision backbones.

``import mvlab`` is light (no torch): the model functions below load ``mvlab.models`` on first
use, so the torch-free parts (``mvlab.grammar``, ``mvlab.analysis``, ``mvlab --help``,
``mvlab sweep --check``) start in a fraction of a second. ``import mvlab.models`` (or the first
``mvlab.build_model``) registers the ``mambavision_*`` names with timm."""
from __future__ import annotations

from typing import TYPE_CHECKING

from mvlab.lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)

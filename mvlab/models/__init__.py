"""MambaVision-family networks from grammar specs: builder, timm registration, weights, cost.

Importing this package registers the ``mambavision_*`` names with timm (``mambavision.py``
defines them), whatever ``import mvlab`` itself loads.
"""
from mvlab.grammar import PRESETS
from mvlab.models.complexity import Complexity, complexity
from mvlab.models.mambavision import TIMM_NAMES, MambaVision
from mvlab.models.registry import build_model, create_model, set_scan_backend
from mvlab.models.weights import CheckpointError, load_pretrained, read_state_dict

__all__ = [
    "MambaVision", "build_model", "create_model", "set_scan_backend", "PRESETS", "TIMM_NAMES",
    "load_pretrained", "read_state_dict", "CheckpointError", "complexity", "Complexity",
]

"""MambaVision-family networks from grammar specs: builder, timm registration, weights, cost."""
from mvlab.grammar import PRESETS
from mvlab.models.checkpoint import CheckpointError, load_pretrained, read_state_dict
from mvlab.models.complexity import Complexity, complexity
from mvlab.models.mambavision import MambaVision
from mvlab.models.registry import TIMM_NAMES, build_model, create_model, set_scan_backend

__all__ = [
    "MambaVision", "build_model", "create_model", "set_scan_backend", "PRESETS", "TIMM_NAMES",
    "load_pretrained", "read_state_dict", "CheckpointError", "complexity", "Complexity",
]

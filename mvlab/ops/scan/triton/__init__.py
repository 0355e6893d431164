"""The selective scan as fused Triton kernels, forward and backward (the GPU default).

    settings.py       LaunchSettings (chosen by the caller, frozen), plan() -> Launch (per call)
    common.py         the optional triton import, availability, named constants, softplus
    chunk_kernels.py  associative scan over chunks of tokens (the default family)
    loop_kernels.py   one token per step
    launch.py         host side: buffers, strides, constexprs, the launches
    autograd.py       the eager autograd Function
    op.py             the torch.library custom ops (torch.compile, torch.export)
    scan.py           selective_scan_triton, the entry point

Runs on CUDA tensors, and on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set
before triton is imported), which is how CI checks its numerics without a GPU. The SiLU(z) gate is
applied by the caller in PyTorch. Launch settings are passed, never set: ``selective_scan``
(the dispatcher) uses ``DEFAULT_SETTINGS``; a caller that wants others calls
``selective_scan_triton(..., settings=LaunchSettings(kernel="loop"))``.
"""
from mvlab.ops.scan.triton.common import interpreter_enabled, is_available, triton
from mvlab.ops.scan.triton.scan import selective_scan_triton
from mvlab.ops.scan.triton.settings import (
    DEFAULT_SETTINGS,
    ChunkTiles,
    Launch,
    LaunchSettings,
    LoopTiles,
    plan,
)

__all__ = ["selective_scan_triton", "is_available", "interpreter_enabled", "triton",
           "LaunchSettings", "ChunkTiles", "LoopTiles", "DEFAULT_SETTINGS", "Launch", "plan"]

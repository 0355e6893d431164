"""What both kernel families and the host code share: the optional triton import, where the
kernels can run, named constants and the softplus."""
from __future__ import annotations

import math
import os

import torch

try:  # triton is optional: the CPU install may not have it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None

# How B and C are laid out; a kernel constexpr, so each layout compiles its own loads.
CONSTANT, SHARED, PER_CHANNEL = 0, 1, 2

# fp32 kernels compute exp(x) as exp2(x * log2(e)): exp2 is the hardware instruction.
LOG2E_VALUE = math.log2(math.e)
# softplus(x) = x above this (exp would overflow fp32 long before it matters)...
SOFTPLUS_LINEAR_ABOVE_VALUE = 20.0
# ...and exp(x) below this, where log1p(exp(x)) == exp(x) in fp32 and log(1 + tiny) loses it.
SOFTPLUS_EXP_BELOW_VALUE = -15.0


def interpreter_enabled() -> bool:
    """Whether Triton runs kernels in its CPU interpreter in this process."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def is_available(device: torch.device | str) -> bool:
    """Triton can run the scan on ``device``: CUDA with triton, or CPU under the interpreter."""
    if triton is None:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and interpreter_enabled()


def compute_dtype_constexpr(dtype: torch.dtype):
    """The kernels' arithmetic type for inputs computed in ``dtype`` (fp32 or float64)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


if triton is not None:
    # a @triton.jit function may read only constexpr globals
    LOG2E = tl.constexpr(LOG2E_VALUE)
    SOFTPLUS_LINEAR_ABOVE = tl.constexpr(SOFTPLUS_LINEAR_ABOVE_VALUE)
    SOFTPLUS_EXP_BELOW = tl.constexpr(SOFTPLUS_EXP_BELOW_VALUE)
    MODE_CONSTANT = tl.constexpr(CONSTANT)
    MODE_SHARED = tl.constexpr(SHARED)

    @triton.jit
    def softplus(raw):
        small = tl.exp(tl.minimum(raw, SOFTPLUS_LINEAR_ABOVE))
        return tl.where(raw > SOFTPLUS_LINEAR_ABOVE, raw,
                        tl.where(raw < SOFTPLUS_EXP_BELOW, small, tl.log(1.0 + small)))

"""Device, precision and memory-layout decisions shared by the trainer and the benchmark.

Everything here is device-agnostic: "auto" settings resolve to the fast choice on each device:
bf16 or fp16 autocast on CUDA, fp32 on the CPU (where autocast only slows down), and the
channels-last memory layout on both.
"""
from __future__ import annotations

import contextlib
import numbers
import platform
import random
from typing import Any

import numpy as np
import torch

from mvlab.errors import UserError
from mvlab.training.config import precision_name


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when present, else the CPU; anything else must exist on this machine."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"device={name!r} is not a device torch knows ({exc}); use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name!r} but this machine has no CUDA GPU; use device=cpu or auto")
    return device


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """Map a user's precision setting (any name in ``config.PRECISIONS``) to ``fp32``, ``fp16``
    or ``bf16`` (the latter two: autocast).

    ``auto`` means bf16 on a CUDA GPU that supports it (no loss scaling needed), fp16 on older
    GPUs, fp32 on the CPU.
    """
    try:
        value = precision_name(precision)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if value == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    return value


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for fp16/bf16, a no-op for fp32. The scan keeps its state in fp32 whatever the
    autocast dtype: that is the selective-scan contract (mvlab.ops.scan), not the caller's job."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_channels_last(value: bool | None, device: torch.device) -> bool:
    """``None`` (auto): channels-last on CUDA (tensor cores want NHWC) and on the CPU (oneDNN
    convolutions too: the proxy trial trains 20-25 % faster on this project's 2-core CI machine,
    measured by alternating runs); NCHW elsewhere."""
    if value is None:
        return device.type in ("cuda", "cpu")
    return bool(value)


def compile_mode(value: bool | str | None) -> str | None:
    """``None`` when not compiling, else the ``torch.compile`` mode name."""
    if value in (None, False, "", "none", "false", "eager", "off"):
        return None
    if value is True or value in ("true", "on"):
        return "default"
    return str(value)


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device``: timing without this measures kernel launches only."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors and host ``MemoryError``."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def seed_everything(seed: int, *, devices: bool = True) -> None:
    """Seed Python, NumPy (timm's Mixup draws from it) and torch: every device's generator, or
    with ``devices=False`` the CPU's only. torch.manual_seed also queues a seed for CUDA that
    its first call picks up, which ``capture_rng_state`` cannot save before CUDA starts: a
    draw that must leave the run's random state as it was seeds the CPU only."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if devices:
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def device_name(device: torch.device) -> str:
    """Human-readable accelerator name, e.g. ``NVIDIA H100 80GB HBM3`` or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo") as fh:
                for line in fh:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine() or "cpu"
    return device.type


def software_versions() -> dict[str, str]:
    """torch, CUDA and cuDNN versions as strings (``none`` when torch was built without them)."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch": torch.__version__.split("+")[0],
        "cuda": torch.version.cuda or "none",
        "cudnn": str(cudnn) if cudnn else "none",
    }


def scan_backend_of(model: torch.nn.Module, device: torch.device) -> str:
    """The scan backend an mvlab model really runs on ``device`` ("auto" resolved), or ``n/a``
    for models without a selective scan."""
    name = getattr(model, "scan_backend", None)
    if not name:
        return "n/a"
    from mvlab.ops import resolve_backend

    try:
        return resolve_backend(str(name), device)
    except (ValueError, KeyError):
        return str(name)


class cpu_threads(contextlib.ContextDecorator):
    """``torch.set_num_threads(n)`` inside the block, the previous count restored after; ``None``
    leaves torch's setting alone. On a machine shared with other jobs, one thread per process is
    often several times faster than one per core: OpenMP threads that lose their core to another
    process stall each other at every parallel region."""

    def __init__(self, n: int | None):
        # Checked here, not only by each caller: 0 once fell through ``if n:`` and ran on every
        # core, the opposite of what a caller asking for few threads wanted. ``None`` is the one
        # way to say "torch's default".
        if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
            raise UserError(f"threads={n!r}: must be an integer of at least 1 (or leave it unset "
                            f"for torch's default, one thread per core)")
        self.n = n
        self.previous: int | None = None

    def __enter__(self) -> cpu_threads:
        if self.n is not None:
            self.previous = torch.get_num_threads()
            torch.set_num_threads(int(self.n))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            torch.set_num_threads(self.previous)
            self.previous = None

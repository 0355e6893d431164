"""One selective-scan API, many backends.

``selective_scan`` has the exact semantics of mamba-ssm's ``selective_scan_fn``:

    u, delta, z: (batch, dim, L)       A: (dim, d_state)
    B, C: (batch, d_state, L), grouped (batch, G, d_state, L) or constant (dim, d_state)
    D, delta_bias: (dim,) fp32
    delta <- softplus(delta + delta_bias) if delta_softplus else delta + delta_bias
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t ;  y_t = <h_t, C_t> + D * u_t
    y <- y * silu(z) when z is given.  Output in u's dtype, arithmetic and state in fp32
    (float64 for float64 inputs); ``return_last_state`` also returns h_{L-1}, (batch, dim, d_state).

Backends (one module each; ``triton`` a package): ``reference`` (the token loop, ground truth), ``cpu_c`` (compiled
C loops: the CPU default where a C compiler exists, built on first use), ``chunked`` (PyTorch: CPU
fallback, GPU fallback), ``triton`` (GPU default; CPU only under TRITON_INTERPRET=1),
``mamba_ssm`` (CUDA, when mamba-ssm imports). ``auto`` picks the fastest one that can run on the
inputs' device; ``resolve_backend`` says which (and why a faster one was skipped).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from mvlab.ops.scan import cpu_c as _cpu_c
from mvlab.ops.scan import mamba_ssm as _mamba_ssm
from mvlab.ops.scan import triton as _triton
from mvlab.ops.scan.args import ScanArgumentError, ScanBackendUnavailable, check_args, compute_dtype
from mvlab.ops.scan.chunked import selective_scan_chunked
from mvlab.ops.scan.cpu_c import selective_scan_cpu_c
from mvlab.ops.scan.mamba_ssm import selective_scan_mamba_ssm
from mvlab.ops.scan.reference import selective_scan_reference
from mvlab.ops.scan.triton import selective_scan_triton

log = logging.getLogger(__name__)

BACKENDS: dict[str, Callable] = {
    "reference": selective_scan_reference,
    "chunked": selective_scan_chunked,
    "cpu_c": selective_scan_cpu_c,
    "triton": selective_scan_triton,
    "mamba_ssm": selective_scan_mamba_ssm,
}
BACKEND_NAMES = ("auto", *BACKENDS)


def _runs_on(name: str, device: torch.device) -> bool:
    if name == "triton":
        return _triton.is_available(device)
    if name == "mamba_ssm":
        return _mamba_ssm.is_available(device)
    if name == "cpu_c":  # builds the kernels on the first call, never at import
        return _cpu_c.is_available(device)
    return True


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on ``device``, fastest first (``auto`` takes the first)."""
    device = torch.device(device)
    if device.type == "cuda":
        order = ["triton", "mamba_ssm", "chunked", "reference"]
    else:  # Triton's interpreter is a correctness tool, far slower than the token loop
        order = ["cpu_c", "chunked", "reference", "triton"]
    return [name for name in order if _runs_on(name, device)]


_announced: set[tuple[str, str]] = set()


def _devices_here() -> list[torch.device]:
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def resolve_backend(backend: str, device: torch.device | str | None = None) -> str:
    """The concrete backend ``backend`` ("auto" or a name) stands for on ``device``.

    Without a device, "auto" resolves for the CPU and a name is accepted when it can run on some
    device of this process (a model built on the CPU may be moved to the GPU later).
    Raises ``ScanArgumentError`` for an unknown name and ``ScanBackendUnavailable`` for a known
    one that cannot run there (both are ``mvlab.errors.UserError``)."""
    if device is None:
        if backend in BACKENDS and any(_runs_on(backend, d) for d in _devices_here()):
            return backend
        device = "cpu"
    device = torch.device(device)
    if backend == "auto":
        name = available_backends(device)[0]
        if (name, device.type) not in _announced:
            _announced.add((name, device.type))
            skipped = ("" if device.type != "cpu" or name == "cpu_c"
                       else f" (cpu_c is unavailable: {_cpu_c.unavailable_reason(device)})")
            log.info("selective_scan: backend 'auto' uses %r on %s%s", name, device.type, skipped)
        return name
    if backend not in BACKENDS:
        raise ScanArgumentError(
            f"unknown scan backend {backend!r}; choose one of: {', '.join(BACKEND_NAMES)}")
    if not _runs_on(backend, device):
        why = f" ({_cpu_c.unavailable_reason(device)})" if backend == "cpu_c" else ""
        raise ScanBackendUnavailable(
            f"scan backend {backend!r} cannot run on {device.type}{why}; available there: "
            f"{', '.join(available_backends(device))} (or 'auto')")
    return backend


# Backends whose kernels are torch.library custom ops: torch.compile traces a model through them
# as one graph. The others (Python loops, buffer pools, autograd Functions) run eagerly inside a
# compiled model, at the price of a graph break per mixer.
TRACEABLE = ("cpu_c", "triton")


@torch.compiler.assume_constant_result
def _resolve_for_trace(backend: str, device_type: str) -> str:
    return resolve_backend(backend, device_type)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto"):
    """mamba-ssm's selective scan (semantics in this module's docstring) on the chosen backend.

    Returns y (batch, dim, L) in u's dtype, or (y, last_state) with ``return_last_state``.
    Autocast is switched off inside: the arithmetic stays fp32 under AMP (a matmul in a backend
    would otherwise run in fp16/bf16). Under torch.compile the ``TRACEABLE`` backends are traced
    (no graph break); any other backend is called eagerly from the compiled graph."""
    if torch.compiler.is_compiling():
        name = _resolve_for_trace(backend, u.device.type)
        if name in TRACEABLE:
            check_args(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias)
            with torch.autocast(device_type=u.device.type, enabled=False):
                return BACKENDS[name](u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                      delta_softplus=delta_softplus,
                                      return_last_state=return_last_state)
        if torch.compiler.is_exporting() and name != "reference":
            # an exported program has no eager fallback: the others use raw data pointers
            raise ScanBackendUnavailable(
                f"torch.export needs a traceable scan backend ({', '.join(TRACEABLE)}, or "
                f"'reference', a token loop unrolled into the graph); the model uses {name!r} "
                f"(cpu_c needs a C compiler): set_scan_backend(model, ...) to one of them")
    return _selective_scan_eager(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                 return_last_state, backend)


@torch.compiler.disable
def _selective_scan_eager(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                          backend):
    check_args(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias)
    if u.device.type == "meta":  # shapes only: timm builds and checks models on the meta device
        y = torch.empty(u.shape, dtype=u.dtype, device=u.device)
        if not return_last_state:
            return y
        return y, u.new_empty(u.shape[0], u.shape[1], A.shape[1], dtype=compute_dtype(u))
    fn = BACKENDS[resolve_backend(backend, u.device)]
    # the named range lets a profile (and benchmarks/layout_copies.py) tell the scan's share
    with torch.autocast(device_type=u.device.type, enabled=False), \
            torch.profiler.record_function("mvlab::selective_scan"):
        return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                  delta_softplus=delta_softplus, return_last_state=return_last_state)


__all__ = ["selective_scan", "available_backends", "resolve_backend", "BACKENDS", "BACKEND_NAMES",
           "TRACEABLE",
           "ScanArgumentError", "ScanBackendUnavailable", "selective_scan_reference",
           "selective_scan_chunked", "selective_scan_cpu_c", "selective_scan_triton",
           "selective_scan_mamba_ssm"]

"""One selective-scan API, many backends.

``selective_scan`` has the exact semantics of mamba-ssm's ``selective_scan_fn``:

    u, delta, z: (batch, dim, L)       A: (dim, d_state)
    B, C: (batch, d_state, L), grouped (batch, G, d_state, L) or constant (dim, d_state)
    D, delta_bias: (dim,) fp32
    delta <- softplus(delta + delta_bias) if delta_softplus else delta + delta_bias
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t ;  y_t = <h_t, C_t> + D * u_t
    y <- y * silu(z) when z is given.  Output in u's dtype, arithmetic and state in fp32.

Backends register themselves in ``BACKENDS``; ``auto`` picks the fastest one that can run on the
inputs' device.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from mvlab.ops.scan.reference import selective_scan_reference

BACKENDS: dict[str, Callable] = {"reference": selective_scan_reference}


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on ``device``, fastest first."""
    return [name for name in BACKENDS]


def resolve_backend(backend: str, device: torch.device | str = "cpu") -> str:
    """The concrete backend ``backend`` ("auto" or a name) stands for on ``device``."""
    if backend == "auto":
        return available_backends(device)[0]
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; available: {', '.join(BACKENDS)}")
    return backend


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto"):
    fn = BACKENDS[resolve_backend(backend, u.device)]
    return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
              return_last_state=return_last_state)


__all__ = ["selective_scan", "available_backends", "resolve_backend", "BACKENDS",
           "selective_scan_reference"]

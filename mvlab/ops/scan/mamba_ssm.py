"""The selective scan through mamba-ssm's CUDA kernel (optional: ``pip install mvlab[cuda]``).

mamba-ssm imports its compiled extension at module import time, so merely importing it fails on a
machine without a matching CUDA build; this module therefore imports it lazily and reports the
backend as unavailable instead of failing.
"""
from __future__ import annotations

import functools

import torch

from mvlab.ops.scan.args import ScanBackendUnavailable


@functools.lru_cache(maxsize=1)
def _kernel():
    """mamba-ssm's ``selective_scan_fn``, or the reason it cannot be imported."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # ImportError, or an OSError/RuntimeError from the compiled extension
        return None, f"{type(exc).__name__}: {exc}"
    return selective_scan_fn, ""


def is_available(device: torch.device | str) -> bool:
    """mamba-ssm imports and ``device`` is a CUDA device."""
    return torch.device(device).type == "cuda" and _kernel()[0] is not None


def selective_scan_mamba_ssm(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, return_last_state=False):
    """mamba-ssm's fused CUDA selective scan (see ``selective_scan`` for the arguments)."""
    fn, reason = _kernel()
    if fn is None or u.device.type != "cuda":
        why = reason if fn is None else f"tensors are on {u.device}"
        raise ScanBackendUnavailable(
            f"selective_scan: the 'mamba_ssm' backend cannot run ({why}); it needs mamba-ssm "
            "installed for this torch/CUDA build and CUDA tensors. Use backend='auto'.")
    if u.dtype == torch.float64:
        raise ScanBackendUnavailable(
            "selective_scan: mamba-ssm's kernel has no float64 version; use backend='triton', "
            "'chunked' or 'reference' for float64.")
    return fn(u, delta, A, B, C, D=None if D is None else D.float(), z=z,
              delta_bias=None if delta_bias is None else delta_bias.float(),
              delta_softplus=delta_softplus, return_last_state=return_last_state)

"""The selective scan as a sequential loop over tokens: slow, obviously right, the ground truth.

Semantics follow mamba-ssm's ``selective_scan_fn`` exactly (see ``mvlab.ops.scan.selective_scan``).
Arithmetic is fp32 (float64 for float64 inputs); gradients come from autograd through the loop.
"""
from __future__ import annotations

import torch

from mvlab.ops.scan.args import compute_dtype, epilogue, expand_groups, prepare_delta


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, return_last_state=False):
    """mamba-ssm's selective scan, one token at a time (see ``selective_scan`` for the arguments)."""
    dtype = compute_dtype(u)
    delta = prepare_delta(delta, delta_bias, delta_softplus, dtype)
    x = u.to(dtype)
    batch, dim, length = x.shape
    A = A.to(dtype)
    d_state = A.shape[1]
    variable_B, variable_C = B.dim() >= 3, C.dim() >= 3
    B = B.to(dtype) if B.dim() != 4 else expand_groups(B.to(dtype), dim)
    C = C.to(dtype) if C.dim() != 4 else expand_groups(C.to(dtype), dim)

    state = x.new_zeros(batch, dim, d_state)
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]  # (batch, dim, 1)
        if not variable_B:
            Bt = B[None]  # (1, dim, N)
        elif B.dim() == 3:
            Bt = B[:, None, :, t]  # (batch, 1, N)
        else:
            Bt = B[:, :, :, t]  # (batch, dim, N)
        state = torch.exp(dt * A) * state + dt * Bt * x[:, :, t, None]
        if not variable_C:
            Ct = C[None]
        elif C.dim() == 3:
            Ct = C[:, None, :, t]
        else:
            Ct = C[:, :, :, t]
        ys.append((state * Ct).sum(-1))
    y = torch.stack(ys, dim=2) if ys else x.new_zeros(batch, dim, 0)
    out = epilogue(y, x, D, z, u.dtype)
    return (out, state) if return_last_state else out

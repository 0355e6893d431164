"""The selective scan as a sequential loop over tokens: slow, obviously right, the ground truth.

Semantics follow mamba-ssm's ``selective_scan_fn`` exactly (see ``mvlab.ops.scan.selective_scan``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def expand_groups(BC: torch.Tensor, dim: int) -> torch.Tensor:
    """(batch, G, N, L) -> (batch, dim, N, L): channel d reads group d // (dim // G), as mamba-ssm does."""
    groups = BC.shape[1]
    if dim % groups:
        raise ValueError(f"selective_scan: dim {dim} is not a multiple of the {groups} B/C groups")
    return BC.repeat_interleave(dim // groups, dim=1)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, return_last_state=False):
    dtype_in = u.dtype
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    A = A.float()
    d_state = A.shape[1]
    variable_B, variable_C = B.dim() >= 3, C.dim() >= 3
    B = B.float() if not variable_B or B.dim() == 3 else expand_groups(B.float(), dim)
    C = C.float() if not variable_C or C.dim() == 3 else expand_groups(C.float(), dim)

    state = u.new_zeros(batch, dim, d_state)
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]  # (batch, dim, 1)
        if not variable_B:
            Bt = B[None]  # (1, dim, N)
        elif B.dim() == 3:
            Bt = B[:, None, :, t]  # (batch, 1, N)
        else:
            Bt = B[:, :, :, t]  # (batch, dim, N)
        state = torch.exp(dt * A) * state + dt * Bt * u[:, :, t, None]
        if not variable_C:
            Ct = C[None]
        elif C.dim() == 3:
            Ct = C[:, None, :, t]
        else:
            Ct = C[:, :, :, t]
        ys.append((state * Ct).sum(-1))
    y = torch.stack(ys, dim=2) if ys else u.new_zeros(batch, dim, 0)
    out = y if D is None else y + u * D.float()[:, None]
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype_in)
    return (out, state) if return_last_state else out

"""Argument checks and the parts of the selective scan every backend shares.

The backends differ only in how they run the recurrence; the delta preprocessing (bias, softplus),
the D skip term and the SiLU(z) gate are the same plain PyTorch code for all of them, so their
gradients come from autograd and cannot drift between backends.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mvlab.errors import UserError


class ScanArgumentError(UserError, ValueError):
    """Arguments of ``selective_scan`` with inconsistent shapes or unsupported dtypes."""


class ScanBackendUnavailable(UserError, RuntimeError):
    """The requested backend cannot run here (missing package, wrong device)."""


def compute_dtype(u: torch.Tensor) -> torch.dtype:
    """fp32 for everything except float64 inputs, which stay float64 (gradcheck needs them)."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def bc_kind(BC: torch.Tensor) -> str:
    """"constant" (dim, N), "shared" (batch, N, L) or "grouped" (batch, G, N, L)."""
    return {2: "constant", 3: "shared", 4: "grouped"}.get(BC.dim(), "invalid")


def check_args(u, delta, A, B, C, D=None, z=None, delta_bias=None) -> None:
    """Raise ``ScanArgumentError`` naming the argument whose shape disagrees with u's."""
    if u.dim() != 3:
        raise ScanArgumentError(f"selective_scan: u must be (batch, dim, L), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ScanArgumentError(f"selective_scan: delta shape {tuple(delta.shape)} != u shape {tuple(u.shape)}")
    if z is not None and z.shape != u.shape:
        raise ScanArgumentError(f"selective_scan: z shape {tuple(z.shape)} != u shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ScanArgumentError(f"selective_scan: A must be (dim={dim}, d_state), got {tuple(A.shape)}")
    if A.is_complex():
        raise ScanArgumentError("selective_scan: complex A is not supported by mvlab's backends")
    d_state = A.shape[1]
    for name, BC in (("B", B), ("C", C)):
        kind = bc_kind(BC)
        expected = {"constant": (dim, d_state), "shared": (batch, d_state, length)}.get(kind)
        if kind == "grouped":
            groups = BC.shape[1]
            expected = (batch, groups, d_state, length)
            if groups == 0 or dim % groups:
                raise ScanArgumentError(
                    f"selective_scan: {name} has {groups} groups, which does not divide dim={dim}")
        if expected is None or tuple(BC.shape) != expected:
            raise ScanArgumentError(
                f"selective_scan: {name} must be (dim, d_state), (batch, d_state, L) or "
                f"(batch, groups, d_state, L) = {expected or '...'}; got {tuple(BC.shape)}")
    for name, vec in (("D", D), ("delta_bias", delta_bias)):
        if vec is not None and tuple(vec.shape) != (dim,):
            raise ScanArgumentError(f"selective_scan: {name} must be (dim={dim},), got {tuple(vec.shape)}")


def prepare_delta(delta: torch.Tensor, delta_bias, delta_softplus: bool, dtype: torch.dtype) -> torch.Tensor:
    """The effective step size: softplus(delta + bias) or delta + bias, in the compute dtype."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def expand_groups(BC: torch.Tensor, dim: int) -> torch.Tensor:
    """(batch, G, N, L) -> (batch, dim, N, L): channel d reads group d // (dim // G), as mamba-ssm does."""
    groups = BC.shape[1]
    if dim % groups:
        raise ScanArgumentError(f"selective_scan: dim {dim} is not a multiple of the {groups} B/C groups")
    return BC.repeat_interleave(dim // groups, dim=1)


def or_empty(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """``t``, or an empty tensor standing in for None: a torch.library custom op cannot return
    None, so the backends' ops send absent optional results (and gradients) this way."""
    return t if t is not None else like.new_empty(0)


def grads_of_present(grads, inputs) -> tuple:
    """A custom op's gradients back to autograd: None for each input that was absent (its
    gradient slot came back as ``or_empty``'s placeholder)."""
    return tuple(g if t is not None else None for g, t in zip(grads, inputs, strict=True))


def epilogue(y: torch.Tensor, u: torch.Tensor, D, z, dtype_out: torch.dtype) -> torch.Tensor:
    """y + D*u, gated by SiLU(z) when z is given, cast to u's dtype."""
    if D is not None:
        y = y + u.to(y.dtype) * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype_out)

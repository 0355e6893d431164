"""``selective_scan_triton``: arguments checked and laid out, the launch planned, then the eager
Function or (under torch.compile) the custom op."""
from __future__ import annotations

import torch

from mvlab.ops.scan.args import ScanBackendUnavailable, compute_dtype, expand_groups
from mvlab.ops.scan.triton.autograd import TritonScan
from mvlab.ops.scan.triton.common import is_available
from mvlab.ops.scan.triton.op import launch_args, scan_op
from mvlab.ops.scan.triton.settings import DEFAULT_SETTINGS, LaunchSettings, plan


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, return_last_state=False, chunk: int | None = None,
                          settings: LaunchSettings = DEFAULT_SETTINGS):
    """The selective scan as fused Triton kernels (see ``selective_scan`` for the arguments).

    ``settings`` chooses the kernel family and tiles; ``chunk`` forces the tokens per chunk
    (rounded up to a power of two; tests use it)."""
    if not torch.compiler.is_compiling() and not is_available(u.device):
        raise ScanBackendUnavailable(
            f"selective_scan: the 'triton' backend cannot run on {u.device}: it needs triton and a "
            "CUDA device, or TRITON_INTERPRET=1 set before triton is imported (CPU, slow). "
            "Use backend='auto' or 'chunked'.")
    dim = u.shape[1]
    dtype = compute_dtype(u)
    if B.dim() == 4:  # groups are expanded by PyTorch, which also sums their gradients back
        B = expand_groups(B, dim)
    if C.dim() == 4:
        C = expand_groups(C, dim)
    launch = plan(dim, A.shape[1], u.shape[2], settings, chunk)
    # u, delta and shared B/C are read in place whatever their strides (no layout copies)
    args = (u, delta, A.contiguous(), B if B.dim() == 3 else B.contiguous(),
            C if C.dim() == 3 else C.contiguous(), D.contiguous() if D is not None else None,
            delta_bias.contiguous() if delta_bias is not None else None, bool(delta_softplus))
    if torch.compiler.is_compiling():
        y, last, _ = scan_op(*args, z is not None, *launch_args(launch))
    else:
        y, last = TritonScan.apply(*args, launch, z is not None)
    if z is not None:
        y = (y * torch.nn.functional.silu(z.to(dtype))).to(u.dtype)
    return (y, last) if return_last_state else y

"""The ``triton`` backend against ``reference``, run by Triton's CPU interpreter.

TRITON_INTERPRET must be set before triton is imported, so every check runs in a subprocess and
the variable never leaks into this test process. The interpreter is slow: shapes stay tiny, with
forced short chunks so the carry between chunks is still exercised."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")


def _interpreted(code: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kernel", ["chunk", "loop"])
def test_triton_matches_reference_under_interpreter(dtype, kernel):
    proc = _interpreted(f"""
        import sys
        import mvlab.ops.scan.triton as scan_triton
        from mvlab.ops.scan.check import main
        scan_triton.TILE["kernel"] = "{kernel}"
        sys.exit(main(["--backend", "triton", "--dtype", "{dtype}", "--cases", "4",
                       "--max-len", "10", "--max-dim", "4", "--chunk", "4", "--seed", "7"]))
    """)
    assert proc.stdout, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    failures = [r for r in report["results"] if r["max_error"] > report["tolerance"]]
    assert not failures and proc.returncode == 0, failures or proc.stderr[-3000:]
    variants = {r["case"]["bc"] for r in report["results"]}
    assert variants == {"shared", "constant", "grouped"}
    assert any(r["case"]["stress"] for r in report["results"])


def test_triton_gradcheck_and_dispatch_under_interpreter():
    proc = _interpreted("""
        import torch
        from mvlab.ops import available_backends, selective_scan
        from mvlab.ops.scan.check import Case, make_inputs
        from mvlab.ops.scan import triton as scan_triton
        from mvlab.ops.scan.triton import selective_scan_triton

        assert "triton" in available_backends("cpu"), available_backends("cpu")
        case = Case(batch=1, dim=2, length=3, d_state=2, bc="shared")
        inputs = make_inputs(case, torch.float64)
        names = [k for k, v in inputs.items() if v is not None]

        def fn(*tensors):
            kw = dict(zip(names, tensors))
            return selective_scan_triton(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], D=kw["D"],
                                         z=kw["z"], delta_bias=kw["delta_bias"], delta_softplus=True,
                                         return_last_state=True, chunk=2)

        assert torch.autograd.gradcheck(fn, tuple(inputs[k] for k in names), fast_mode=True)
        scan_triton.TILE["kernel"] = "loop"
        assert torch.autograd.gradcheck(fn, tuple(inputs[k] for k in names), fast_mode=True)
        half = make_inputs(Case(batch=1, dim=2, length=5, d_state=3), torch.float16)
        y = selective_scan(half["u"], half["delta"], half["A"], half["B"], half["C"], backend="triton")
        assert y.dtype == torch.float16 and torch.isfinite(y).all()
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


@pytest.mark.parametrize("kernel", ["chunk", "loop"])
def test_token_major_views_are_read_in_place_under_interpreter(kernel):
    """The mixer hands the scan transposed views of (batch, L, channels) tensors; the kernels read
    them through their strides (no layout copy) and write y token-major, in u's dtype."""
    proc = _interpreted(f"""
        import torch
        import mvlab.ops.scan.triton as scan_triton
        from mvlab.ops.scan.reference import selective_scan_reference
        from mvlab.ops.scan.triton import selective_scan_triton
        scan_triton.TILE["kernel"] = "{kernel}"

        torch.manual_seed(3)
        batch, dim, L, N = 2, 4, 7, 3
        def token_major(*shape):  # (batch, L, c) memory seen as (batch, c, L)
            return torch.randn(shape[0], shape[2], shape[1], dtype=torch.float64).transpose(1, 2)
        x_dbl = torch.randn(batch, L, 2 + 2 * N, dtype=torch.float64)  # as the mixer's x_proj
        leaves = dict(u=token_major(batch, dim, L), delta=token_major(batch, dim, L) * 0.5,
                      A=-torch.rand(dim, N, dtype=torch.float64) - 0.5,
                      B=x_dbl[..., 2:2 + N].transpose(1, 2), C=x_dbl[..., 2 + N:].transpose(1, 2),
                      D=torch.randn(dim, dtype=torch.float64),
                      delta_bias=torch.randn(dim, dtype=torch.float64))
        assert not leaves["u"].is_contiguous() and not leaves["B"].is_contiguous()
        leaves = {{k: v.requires_grad_(True) for k, v in leaves.items()}}

        def run(fn):
            return fn(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"],
                      D=leaves["D"], delta_bias=leaves["delta_bias"], delta_softplus=True,
                      return_last_state=True, **({{"chunk": 4}} if fn is selective_scan_triton else {{}}))

        y, last = run(selective_scan_triton)
        assert y.stride(1) == 1, y.stride()  # token-major, like u
        y_ref, last_ref = run(selective_scan_reference)
        dy = torch.randn(batch, L, dim, dtype=torch.float64).transpose(1, 2)  # strided dy too
        grads = torch.autograd.grad((y * dy).sum() + last.sum(), list(leaves.values()))
        grads_ref = torch.autograd.grad((y_ref * dy).sum() + last_ref.sum(), list(leaves.values()))
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(last, last_ref, rtol=1e-10, atol=1e-12)
        for name, g, g_ref in zip(leaves, grads, grads_ref):
            torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-11, msg=name)

        half = selective_scan_triton(leaves["u"].detach().half(), leaves["delta"].detach().half(),
                                     leaves["A"].detach().float(), leaves["B"].detach().half(),
                                     leaves["C"].detach().half(), chunk=4)
        assert half.dtype == torch.float16 and half.stride(1) == 1
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_backward_reads_checkpoints_with_the_forwards_chunking_under_interpreter():
    """The kernel settings are fixed at the forward: switching kernel family (and so tokens per
    chunk) between forward and backward must not change the gradients."""
    proc = _interpreted("""
        import torch
        import mvlab.ops.scan.triton as scan_triton
        from mvlab.ops.scan.check import Case, make_inputs, run_backend, compare

        case = Case(batch=1, dim=2, length=40, d_state=2, seed=5)
        inputs = make_inputs(case, torch.float64)
        scan_triton.TILE["kernel"] = "chunk"
        y, last = scan_triton.selective_scan_triton(
            inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], D=inputs["D"],
            delta_bias=inputs["delta_bias"], delta_softplus=True, return_last_state=True)
        scan_triton.TILE["kernel"] = "loop"  # a different CHUNK than the forward's
        names = ["u", "delta", "A", "B", "C", "D", "delta_bias"]
        grads = torch.autograd.grad(y.sum() + last.sum(), [inputs[n] for n in names])
        ref_inputs = {k: (v.detach().clone().requires_grad_() if v is not None else None)
                      for k, v in inputs.items()}
        from mvlab.ops.scan.reference import selective_scan_reference
        y0, last0 = selective_scan_reference(
            ref_inputs["u"], ref_inputs["delta"], ref_inputs["A"], ref_inputs["B"], ref_inputs["C"],
            D=ref_inputs["D"], delta_bias=ref_inputs["delta_bias"], delta_softplus=True,
            return_last_state=True)
        grads0 = torch.autograd.grad(y0.sum() + last0.sum(), [ref_inputs[n] for n in names])
        for n, g, g0 in zip(names, grads, grads0):
            torch.testing.assert_close(g, g0, rtol=1e-9, atol=1e-11, msg=n)
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]

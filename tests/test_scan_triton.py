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
from dataclasses import FrozenInstanceError

import pytest

pytest.importorskip("triton")


def _interpreted(code: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.mark.slow  # Triton's interpreter: 5-7 s
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kernel", ["chunk", "loop"])
def test_triton_matches_reference_under_interpreter(dtype, kernel):
    proc = _interpreted(f"""
        import sys
        from mvlab.ops.scan.check import main
        sys.exit(main(["--backend", "triton", "--kernel", "{kernel}", "--dtype", "{dtype}",
                       "--cases", "4", "--max-len", "10", "--max-dim", "4", "--chunk", "4",
                       "--seed", "7"]))
    """)
    assert proc.stdout, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    failures = [r for r in report["results"] if r["max_error"] > report["tolerance"]]
    assert not failures and proc.returncode == 0, failures or proc.stderr[-3000:]
    variants = {r["case"]["bc"] for r in report["results"]}
    assert variants == {"shared", "constant", "grouped"}
    assert any(r["case"]["stress"] for r in report["results"])


@pytest.mark.slow  # Triton's interpreter: 5-7 s
def test_triton_gradcheck_and_dispatch_under_interpreter():
    proc = _interpreted("""
        import torch
        from mvlab.ops import available_backends, selective_scan
        from mvlab.ops.scan.check import Case, make_inputs
        from mvlab.ops.scan.triton import LaunchSettings, selective_scan_triton

        assert "triton" in available_backends("cpu"), available_backends("cpu")
        case = Case(batch=1, dim=2, length=3, d_state=2, bc="shared")
        inputs = make_inputs(case, torch.float64)
        names = [k for k, v in inputs.items() if v is not None]

        for settings in (LaunchSettings(), LaunchSettings(kernel="loop")):
            def fn(*tensors):
                kw = dict(zip(names, tensors))
                return selective_scan_triton(
                    kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], D=kw["D"], z=kw["z"],
                    delta_bias=kw["delta_bias"], delta_softplus=True, return_last_state=True,
                    chunk=2, settings=settings)

            assert torch.autograd.gradcheck(fn, tuple(inputs[k] for k in names), fast_mode=True)
        half = make_inputs(Case(batch=1, dim=2, length=5, d_state=3), torch.float16)
        y = selective_scan(half["u"], half["delta"], half["A"], half["B"], half["C"], backend="triton")
        assert y.dtype == torch.float16 and torch.isfinite(y).all()
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


@pytest.mark.slow  # Triton's interpreter: 5-7 s
@pytest.mark.parametrize("kernel", ["chunk", "loop"])
def test_token_major_views_are_read_in_place_under_interpreter(kernel):
    """The mixer hands the scan transposed views of (batch, L, channels) tensors; the kernels read
    them through their strides (no layout copy) and write y token-major, in u's dtype."""
    proc = _interpreted(f"""
        import torch
        from mvlab.ops.scan.reference import selective_scan_reference
        from mvlab.ops.scan.triton import LaunchSettings, selective_scan_triton
        settings = LaunchSettings(kernel="{kernel}")

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
                      return_last_state=True,
                      **({{"chunk": 4, "settings": settings}} if fn is selective_scan_triton
                         else {{}}))

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
                                     leaves["C"].detach().half(), chunk=4, settings=settings)
        assert half.dtype == torch.float16 and half.stride(1) == 1
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


@pytest.mark.slow  # Triton's interpreter: 5-7 s
def test_backward_reads_checkpoints_with_the_forwards_chunking_under_interpreter():
    """The launch is fixed at the forward and handed to the backward, in the eager Function and
    in the custom op: a forward with settings other than the defaults (another kernel family and
    so another number of state checkpoints) still gets the reference's gradients."""
    proc = _interpreted("""
        import torch
        from mvlab.ops.scan.check import Case, make_inputs
        from mvlab.ops.scan.reference import selective_scan_reference
        from mvlab.ops.scan.triton import (DEFAULT_SETTINGS, LaunchSettings, plan,
                                           selective_scan_triton)
        from mvlab.ops.scan.triton.op import launch_args, scan_op

        case = Case(batch=1, dim=2, length=40, d_state=2, seed=5)
        names = ["u", "delta", "A", "B", "C", "D", "delta_bias"]
        settings = LaunchSettings(kernel="loop")
        launch = plan(case.dim, case.d_state, case.length, settings)
        default = plan(case.dim, case.d_state, case.length, DEFAULT_SETTINGS)
        assert (launch.loop, launch.chunk) != (default.loop, default.chunk), (launch, default)

        def leaves():
            return make_inputs(case, torch.float64)

        ref = leaves()
        y0, last0 = selective_scan_reference(
            ref["u"], ref["delta"], ref["A"], ref["B"], ref["C"], D=ref["D"],
            delta_bias=ref["delta_bias"], delta_softplus=True, return_last_state=True)
        grads0 = torch.autograd.grad(y0.sum() + last0.sum(), [ref[n] for n in names])

        eager = leaves()
        y, last = selective_scan_triton(
            eager["u"], eager["delta"], eager["A"], eager["B"], eager["C"], D=eager["D"],
            delta_bias=eager["delta_bias"], delta_softplus=True, return_last_state=True,
            settings=settings)
        op = leaves()
        y_op, last_op, ckpt = scan_op(*[op[n] for n in names], True, False, *launch_args(launch))
        assert ckpt.shape[2] == 1  # loop: one chunk of 64 tokens; the default makes two
        for got, inputs in (((y, last), eager), ((y_op, last_op), op)):
            grads = torch.autograd.grad(got[0].sum() + got[1].sum(), [inputs[n] for n in names])
            for n, g, g0 in zip(names, grads, grads0):
                torch.testing.assert_close(g, g0, rtol=1e-9, atol=1e-11, msg=n)
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_launch_settings_are_frozen_and_checked():
    from mvlab.ops.scan.triton.settings import (
        DEFAULT_SETTINGS,
        ChunkTiles,
        LaunchSettings,
        LoopTiles,
        plan,
    )

    with pytest.raises(FrozenInstanceError):
        DEFAULT_SETTINGS.kernel = "loop"
    with pytest.raises(ValueError, match="kernel"):
        LaunchSettings(kernel="loops")
    with pytest.raises(ValueError, match="chunk"):
        ChunkTiles(chunk=0)
    # the H200 sweep's winner at MambaVision-T stage 3 (160 scan channels, 196 tokens)
    t3 = plan(160, 8, 196)
    assert (t3.loop, t3.block_d, t3.block_n, t3.chunk, t3.num_warps) == (False, 8, 8, 32, 4)
    loop = plan(160, 8, 196, LaunchSettings(kernel="loop", loop_tiles=LoopTiles(stages=3)))
    assert (loop.loop, loop.block_d, loop.chunk, loop.num_warps, loop.stages) == (
        True, 32, 64, 1, 3)
    assert plan(3, 5, 7, chunk=3).chunk == 4 and plan(3, 5, 7).chunk == 8


@pytest.mark.slow
def test_kernels_compile_for_a_gpu_without_one():
    """The interpreter runs kernels as Python, so it accepts what Triton's compiler rejects (a
    non-constexpr global, say): every kernel is also compiled to PTX for sm_90, which needs no
    GPU. Both kernel families, both directions, shared B with per-channel C, fp32 and fp64."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import triton
        import triton.language as tl
        from triton.backends.compiler import GPUTarget
        from mvlab.ops.scan.triton import chunk_kernels, loop_kernels

        for module in (chunk_kernels, loop_kernels):
            for kernel in (module.forward_kernel, module.backward_kernel):
                for dt in (tl.float32, tl.float64):
                    consts = dict(B_MODE=1, C_MODE=2, HAS_D=True, HAS_BIAS=True, SOFTPLUS=True,
                                  USE_EXP2=dt == tl.float32, DT=dt, BLOCK_D=8, BLOCK_N=8,
                                  CHUNK=16, HAS_DLAST=True, STAGES=2)
                    consts = {k: v for k, v in consts.items() if k in kernel.arg_names}
                    pointer = "*fp64" if dt == tl.float64 else "*fp32"
                    signature = {n: "constexpr" if n in consts else
                                 pointer if n.endswith("_ptr") else "i32"
                                 for n in kernel.arg_names}
                    source = triton.compiler.ASTSource(kernel, signature, constexprs=consts)
                    assert "ptx" in triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm
        print("ok")
    """)], capture_output=True, text=True, timeout=600,
        env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]

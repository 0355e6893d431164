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

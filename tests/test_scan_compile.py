"""torch.compile traces MambaVision through the scan: the kernels of the default backends are
torch.library custom ops (fake shapes, registered backward), so a compiled model is one graph
with the same numbers as eager. ``aot_eager`` exercises everything compile does to the graph
except code generation, in seconds; the Triton op runs in a subprocess under the interpreter."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mvlab.grammar import set_option
from mvlab.models import build_model
from mvlab.ops.scan import TRACEABLE, cpu_c, selective_scan
from mvlab.ops.scan.check import Case, make_inputs

needs_cpu_c = pytest.mark.skipif(not cpu_c.is_available("cpu"), reason=cpu_c.unavailable_reason())


def _loss_and_grads(forward, model, x, weights):
    model.zero_grad(set_to_none=True)
    loss = (forward(x) * weights).sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.grad is not None}


@needs_cpu_c
@pytest.mark.parametrize("bc", ["shared", "constant", "grouped"])
def test_cpu_c_custom_op_passes_opcheck(bc):
    inputs = make_inputs(Case(batch=2, dim=4, length=5, d_state=3, bc=bc), torch.float64)
    B, B_layout = cpu_c._kernel_layout(inputs["B"], torch.float64, 4)
    C, C_layout = cpu_c._kernel_layout(inputs["C"], torch.float64, 4)
    args = (inputs["u"], inputs["delta"], inputs["A"], B, C, inputs["D"], inputs["z"],
            inputs["delta_bias"], list(B_layout), list(C_layout), True, 0, True)
    torch.library.opcheck(cpu_c._scan_op, args)


@pytest.mark.slow  # torch.compile of a model: 15-40 s
@needs_cpu_c
@pytest.mark.parametrize("variant", ["released", "gate_in_scan"])
def test_compiled_model_is_one_graph_with_eager_numbers(variant):
    torch.manual_seed(0)
    spec = "tiny"
    if variant == "gate_in_scan":  # branch off + gate: z goes into the scan (the pregate path)
        spec = set_option(set_option(spec, "branch", False), "out", "gate")
    model = build_model(spec, num_classes=10)
    assert model.scan_backend == "auto" and "cpu_c" in TRACEABLE
    x, weights = torch.randn(2, 3, 64, 64), torch.randn(2, 10)

    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch._dynamo.reset()

    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss, grads = _loss_and_grads(compiled, model, x, weights)
    loss_eager, grads_eager = _loss_and_grads(model, model, x, weights)
    torch.testing.assert_close(loss, loss_eager, rtol=1e-6, atol=1e-6)
    assert grads.keys() == grads_eager.keys()
    assert any(name.endswith("A_log") for name in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_eager[name], rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():  # inference traces without the residuals the backward would need
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-6, atol=1e-6)
    torch._dynamo.reset()


def test_untraceable_backend_still_runs_compiled_through_a_graph_break():
    torch.manual_seed(0)
    inputs = make_inputs(Case(batch=2, dim=4, length=6, d_state=2, bc="shared"), torch.float32)

    def scan(backend):  # traced work on both sides of the scan, so a break is visible
        y = selective_scan(inputs["u"] * 2, inputs["delta"], inputs["A"], inputs["B"],
                           inputs["C"], inputs["D"], delta_bias=inputs["delta_bias"],
                           delta_softplus=True, backend=backend)
        return y.tanh()

    explanation = torch._dynamo.explain(scan)("chunked")
    assert explanation.graph_break_count >= 1
    compiled = torch.compile(scan, backend="aot_eager")
    torch.testing.assert_close(compiled("chunked"), scan("reference"), rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


@pytest.mark.slow  # a fresh interpreter compiling Triton: about 15 s
def test_triton_custom_op_compiles_under_interpreter():
    pytest.importorskip("triton")
    code = """
        import torch
        from mvlab.ops import selective_scan
        from mvlab.ops.scan.check import Case, make_inputs
        from mvlab.ops.scan.triton import LaunchSettings, plan
        from mvlab.ops.scan.triton.op import launch_args, scan_op

        for bc in ("shared", "constant"):
            inputs = make_inputs(Case(batch=2, dim=3, length=6, d_state=2, bc=bc), torch.float64)
            for settings in (LaunchSettings(), LaunchSettings(kernel="loop")):
                launch = plan(3, 2, 6, settings, chunk=2)
                args = (inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"],
                        inputs["D"], inputs["delta_bias"], True, False, *launch_args(launch))
                torch.library.opcheck(scan_op, args)

        inputs = make_inputs(Case(batch=2, dim=4, length=6, d_state=2, bc="grouped"), torch.float64)
        names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
        leaves = [inputs[n].detach().requires_grad_(True) for n in names]

        def scan(backend, *t):
            y, last = selective_scan(*t[:6], z=t[6], delta_bias=t[7], delta_softplus=True,
                                     return_last_state=True, backend=backend)
            return y, last

        explanation = torch._dynamo.explain(scan)("triton", *leaves)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        torch._dynamo.reset()
        compiled = torch.compile(scan, backend="aot_eager", fullgraph=True)
        out = compiled("triton", *leaves)
        ref = scan("reference", *leaves)
        weights = [torch.randn_like(o) for o in out]
        grads = torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, weights)), leaves)
        grads_ref = torch.autograd.grad(sum((o * w).sum() for o, w in zip(ref, weights)), leaves)
        for a, b in zip((*out, *grads), (*ref, *grads_ref)):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
        print("ok")
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, "TRITON_INTERPRET": "1"})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-4000:]

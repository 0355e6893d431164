"""Equivalence checks of a scan backend against ``reference``: outputs, last state, all gradients.

Shared by the test-suite (CPU; Triton under its interpreter in a subprocess) and by
``scripts/gpu_check.py`` (the same checks on a CUDA device). Run as a module it prints JSON:

    TRITON_INTERPRET=1 python -m mvlab.ops.scan.check --backend triton --cases 4 --max-len 20
    TRITON_INTERPRET=1 python -m mvlab.ops.scan.check --backend triton --kernel loop --chunk 4
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass

import torch

from mvlab.ops.scan import BACKENDS

INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@dataclass(frozen=True)
class Case:
    """One random problem: shapes and which optional arguments are present."""

    batch: int = 2
    dim: int = 4
    length: int = 7
    d_state: int = 4
    bc: str = "shared"  # "shared" (batch, N, L), "constant" (dim, N) or "grouped" (batch, G, N, L)
    groups: int = 2
    has_D: bool = True
    has_z: bool = True
    has_bias: bool = True
    softplus: bool = True
    stress: bool = False  # delta up to 3 and A scaled x4: large delta*|A|
    token_major: bool = False  # u, delta, z and shared B/C as the mixer passes them (views)
    seed: int = 0


def make_inputs(case: Case, dtype: torch.dtype, device: str | torch.device = "cpu") -> dict:
    """Random leaf tensors (requires_grad) for ``case``; D and delta_bias are fp32 unless float64."""
    g = torch.Generator().manual_seed(case.seed)
    b, d, L, N = case.batch, case.dim, case.length, case.d_state
    vec_dtype = torch.float64 if dtype == torch.float64 else torch.float32

    def rand(*shape, dt=dtype, scale=1.0, offset=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + offset).to(dt)

    if case.stress:
        delta = torch.rand(b, d, L, generator=g, dtype=torch.float64).mul(3.0).to(dtype)
    else:
        delta = rand(b, d, L, scale=0.5, offset=-1.0 if case.softplus else 0.5).abs()
    # A as in Mamba's initialisation, -(1..N), perturbed; x4 in the stress case.
    A = -(torch.arange(1, N + 1, dtype=torch.float64).repeat(d, 1)
          * torch.empty(d, N, dtype=torch.float64).uniform_(0.5, 1.5, generator=g))
    if case.stress:
        A = A * 4
    shape_bc = {"shared": (b, N, L), "constant": (d, N), "grouped": (b, case.groups, N, L)}[case.bc]
    inputs = {
        "u": rand(b, d, L), "delta": delta, "A": A.to(vec_dtype),
        "B": rand(*shape_bc), "C": rand(*shape_bc),
        "D": rand(d, dt=vec_dtype) if case.has_D else None,
        "z": rand(b, d, L) if case.has_z else None,
        # Without softplus a negative delta + bias would make the recurrence explode (a > 1),
        # which is not a regime any model runs in: keep the bias positive there.
        "delta_bias": (rand(d, dt=vec_dtype, scale=0.5) if case.softplus
                       else rand(d, dt=vec_dtype, scale=0.2).abs()) if case.has_bias else None,
    }
    inputs = {k: (v.to(device) if v is not None else None) for k, v in inputs.items()}
    if case.token_major:
        # (batch, L, channels) memory seen as (batch, channels, L); B and C as views of one
        # (batch, L, 3 + 2N) buffer like x_proj's output. Views of tensors without grad are
        # leaves, so they can require grad themselves.
        for k in ("u", "delta", "z"):
            if inputs[k] is not None:
                inputs[k] = inputs[k].transpose(1, 2).contiguous().transpose(1, 2)
        if case.bc == "shared":
            x_dbl = torch.cat([torch.zeros(b, L, 3, dtype=dtype, device=device),
                               inputs["B"].transpose(1, 2), inputs["C"].transpose(1, 2)], dim=-1)
            inputs["B"] = x_dbl[..., 3:3 + N].transpose(1, 2)
            inputs["C"] = x_dbl[..., 3 + N:].transpose(1, 2)
    return {k: (v.requires_grad_() if v is not None else None) for k, v in inputs.items()}


def run_backend(name: str, inputs: dict, case: Case, **backend_kwargs):
    """(y, last_state, grads of every present input) of one forward+backward."""
    fn = BACKENDS[name]
    y, last = fn(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], D=inputs["D"],
                 z=inputs["z"], delta_bias=inputs["delta_bias"], delta_softplus=case.softplus,
                 return_last_state=True, **backend_kwargs)
    g = torch.Generator().manual_seed(case.seed + 1)
    weights = torch.randn(y.shape, generator=g, dtype=torch.float64).to(device=y.device, dtype=torch.float32)
    loss = (y.float() * weights).sum() + last.float().square().sum() * 0.5
    present = [k for k in INPUT_NAMES if inputs[k] is not None]
    grads = torch.autograd.grad(loss, [inputs[k] for k in present])
    return y.detach(), last.detach(), dict(zip(present, grads, strict=True))


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max(|want|, 1e-6): inf/NaN anywhere counts as inf."""
    got, want = got.double(), want.double()
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-6)) if want.numel() else 0.0


def compare(name: str, case: Case, dtype: torch.dtype, device: str | torch.device = "cpu",
            **backend_kwargs) -> dict:
    """Relative errors of backend ``name`` against ``reference`` on ``case``, per quantity."""
    inputs = make_inputs(case, dtype, device)
    y, last, grads = run_backend(name, inputs, case, **backend_kwargs)
    inputs_ref = {k: (v.detach().clone().requires_grad_() if v is not None else None)
                  for k, v in inputs.items()}
    y0, last0, grads0 = run_backend("reference", inputs_ref, case)
    errors = {"y": relative_error(y, y0), "last_state": relative_error(last, last0)}
    errors.update({f"d{k}": relative_error(grads[k], grads0[k]) for k in grads0})
    return {"backend": name, "dtype": str(dtype).removeprefix("torch."), "y_dtype": str(y.dtype),
            "case": asdict(case), "errors": errors, "max_error": max(errors.values())}


def random_cases(count: int, seed: int = 0, max_len: int = 40, max_dim: int = 6,
                 max_batch: int = 2) -> list[Case]:
    """``count`` random cases covering every argument variant, plus L = 1 and a stress case."""
    rng = random.Random(seed)
    cases = [Case(length=1, seed=seed), Case(stress=True, length=min(max_len, 33), seed=seed + 1)]
    bcs = ["shared", "constant", "grouped"]
    for i in range(count):
        dim = rng.choice([g for g in (2, 4, 6, 8) if g <= max(2, max_dim)])
        cases.append(Case(
            batch=rng.randint(1, max_batch), dim=dim, length=rng.randint(1, max_len),
            d_state=rng.randint(1, 16), bc=bcs[i % 3], groups=2,
            has_D=rng.random() < 0.7, has_z=rng.random() < 0.5, has_bias=rng.random() < 0.6,
            softplus=rng.random() < 0.6, token_major=i % 2 == 1, seed=seed + 10 + i))
    return cases


def tolerance(dtype: torch.dtype) -> float:
    """Largest relative error accepted against the reference for inputs of ``dtype``."""
    return {torch.float64: 1e-9, torch.float32: 2e-4}.get(dtype, 2e-2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, choices=[b for b in BACKENDS if b != "reference"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--max-len", type=int, default=40)
    parser.add_argument("--max-dim", type=int, default=6)
    parser.add_argument("--chunk", type=int, default=None, help="force tokens per chunk")
    parser.add_argument("--kernel", choices=["chunk", "loop"], default=None,
                        help="triton only: the kernel family (default: the default settings')")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    kwargs = {"chunk": args.chunk} if args.chunk else {}
    if args.kernel:
        if args.backend != "triton":
            parser.error("--kernel applies to --backend triton only")
        from mvlab.ops.scan.triton import LaunchSettings

        kwargs["settings"] = LaunchSettings(kernel=args.kernel)
    results = [compare(args.backend, case, dtype, args.device, **kwargs)
               for case in random_cases(args.cases, args.seed, args.max_len, args.max_dim)]
    json.dump({"tolerance": tolerance(dtype), "results": results}, sys.stdout)
    return 0 if all(r["max_error"] <= tolerance(dtype) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The compiled CPU backend ``cpu_c`` against the ``reference`` token loop, and its fallback."""
from __future__ import annotations

import logging

import pytest
import torch

from mvlab.errors import UserError
from mvlab.ops import available_backends, resolve_backend, selective_scan
from mvlab.ops.scan import cpu_c
from mvlab.ops.scan.check import Case, compare, make_inputs, random_cases, tolerance

F64_TOLERANCE = 1e-10
CASES = random_cases(12, seed=5, max_len=40, max_dim=8)


@pytest.fixture(scope="module", autouse=True)
def kernels():
    """Skip (saying why) where the kernels cannot be built; the fallback tests build their own."""
    if not cpu_c.is_available():
        pytest.skip(f"cpu_c unavailable: {cpu_c.unavailable_reason()}")


def _tol(dtype: torch.dtype) -> float:
    return F64_TOLERANCE if dtype == torch.float64 else tolerance(dtype)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"L{c.length}-N{c.d_state}-{c.bc}-s{c.seed}")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_cpu_c_matches_reference(case, dtype):
    result = compare("cpu_c", case, dtype)
    assert result["max_error"] <= _tol(dtype), result["errors"]


@pytest.mark.parametrize("d_state", [4, 8, 16, 5])  # the specialised sizes and the generic loop
@pytest.mark.parametrize("bc", ["shared", "constant", "grouped"])
def test_state_sizes_layouts_and_threads(d_state, bc):
    """Rows split over 3 threads (per-thread gradient sums added in order); 3 groups of 4
    channels, so a thread's rows straddle group boundaries."""
    case = Case(batch=3, dim=12, length=23, d_state=d_state, bc=bc, groups=3, seed=d_state)
    for dtype in (torch.float64, torch.float32):
        result = compare("cpu_c", case, dtype, threads=3)
        assert result["max_error"] <= _tol(dtype), (dtype, result["errors"])


@pytest.mark.parametrize("segment", [1, 3, 7])
@pytest.mark.parametrize("bc", ["shared", "constant", "grouped"])
def test_backward_segments_from_checkpoints(segment, bc):
    """Forced short segments (not dividing L) exercise the checkpointed recompute of long rows."""
    case = Case(batch=2, dim=4, length=19, d_state=5, bc=bc, seed=segment)
    result = compare("cpu_c", case, torch.float64, segment=segment)
    assert result["max_error"] <= F64_TOLERANCE, result["errors"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_stress_large_decay_stays_finite_and_exact(dtype):
    """delta up to 3 and A x4 (|delta*A| up to ~200): decays underflow to 0, nothing overflows."""
    case = Case(batch=2, dim=4, length=64, d_state=16, stress=True, has_bias=False, softplus=False)
    inputs = make_inputs(case, dtype)
    assert (inputs["delta"] * inputs["A"].max().abs()).max() > 2
    for kwargs in ({}, {"segment": 8}):
        result = compare("cpu_c", case, dtype, **kwargs)
        assert result["max_error"] <= _tol(dtype), (kwargs, result["errors"])


@pytest.mark.parametrize("bc", ["shared", "grouped", "constant"])
def test_gradcheck_float64(bc):
    case = Case(batch=2, dim=4, length=5, d_state=3, bc=bc, groups=2)
    inputs = make_inputs(case, torch.float64)
    names = [k for k, v in inputs.items() if v is not None]

    def fn(*tensors):
        kw = dict(zip(names, tensors, strict=True))
        return selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], D=kw["D"], z=kw["z"],
                              delta_bias=kw["delta_bias"], delta_softplus=True,
                              return_last_state=True, backend="cpu_c")

    assert torch.autograd.gradcheck(fn, tuple(inputs[k] for k in names))


def test_partial_gradients_and_non_contiguous_inputs():
    """Only some inputs need gradients, only the last state feeds the loss, inputs are strided
    views: every combination gives the reference's gradients."""
    case = Case(batch=2, dim=6, length=11, d_state=4, bc="shared")
    base = make_inputs(case, torch.float64)
    for wanted in (("u", "B"), ("delta", "A", "z"), ("C", "D", "delta_bias")):
        for last_only in (False, True):
            outs = {}
            for backend in ("reference", "cpu_c"):
                inp = {k: v.detach().clone().requires_grad_(k in wanted) for k, v in base.items()}
                # the same values through transposed (non-contiguous) views
                u = inp["u"].transpose(1, 2).contiguous().transpose(1, 2)
                B = inp["B"].transpose(1, 2).contiguous().transpose(1, 2)
                y, last = selective_scan(u, inp["delta"], inp["A"], B, inp["C"], D=inp["D"], z=inp["z"],
                                         delta_bias=inp["delta_bias"], delta_softplus=True,
                                         return_last_state=True, backend=backend)
                loss = last.square().sum() if last_only else (y * y.detach()).sum() + last.sum()
                outs[backend] = torch.autograd.grad(loss, [inp[k] for k in wanted], allow_unused=True)
            for name, got, want in zip(wanted, outs["cpu_c"], outs["reference"], strict=True):
                if want is None:  # z does not reach the last state
                    assert got is None or not got.any(), name
                else:
                    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=name)


def test_forward_without_grad_and_empty_inputs():
    case = Case(batch=2, dim=4, length=9, d_state=3)
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(case, torch.float32).items()}
    with torch.no_grad():
        y = selective_scan(**{k: inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z")},
                           backend="cpu_c")
        y_ref = selective_scan(**{k: inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z")},
                               backend="reference")
    torch.testing.assert_close(y, y_ref)
    empty = torch.zeros(2, 4, 0)
    y, last = selective_scan(empty, empty, inputs["A"], torch.zeros(2, 3, 0), torch.zeros(2, 3, 0),
                             return_last_state=True, backend="cpu_c")
    assert y.shape == (2, 4, 0) and last.shape == (2, 4, 3) and not last.any()


def test_auto_prefers_cpu_c_on_the_cpu():
    assert resolve_backend("auto", "cpu") == "cpu_c"
    assert available_backends("cpu")[:3] == ["cpu_c", "chunked", "reference"]
    assert "cpu_c" not in available_backends("meta")


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """A kernel cache of our own and a fresh ``_library``; the real one is restored after."""
    import mvlab.ops.scan as scan
    monkeypatch.setenv("MVLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scan, "_announced", set())
    cpu_c._library.cache_clear()
    yield tmp_path / "cache" / "kernels"
    cpu_c._library.cache_clear()


def test_missing_compiler_falls_back_to_chunked_and_says_why(fresh_build, monkeypatch, caplog):
    monkeypatch.setenv("MVLAB_CC", "mvlab-no-such-compiler")
    with caplog.at_level(logging.INFO, logger="mvlab.ops.scan"):
        assert resolve_backend("auto", "cpu") == "chunked"
    assert "cpu_c" not in available_backends("cpu")
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "'mvlab-no-such-compiler' is not on PATH" in messages
    assert "uses 'chunked'" in messages
    x = torch.randn(1, 2, 3)
    with pytest.raises(UserError, match="mvlab-no-such-compiler"):
        selective_scan(x, x, -torch.rand(2, 2), torch.randn(1, 2, 3), torch.randn(1, 2, 3),
                       backend="cpu_c")
    assert not fresh_build.exists() or not any(fresh_build.iterdir())


def test_failing_compiler_is_reported_and_leaves_no_files(fresh_build, monkeypatch, tmp_path):
    fake = tmp_path / "broken-cc"
    fake.write_text("#!/bin/sh\necho 'broken-cc: cannot compile' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MVLAB_CC", str(fake))
    assert not cpu_c.is_available()
    reason = cpu_c.unavailable_reason()
    assert "failed" in reason and "broken-cc: cannot compile" in reason
    assert resolve_backend("auto", "cpu") == "chunked"
    assert list(fresh_build.iterdir()) == []  # temporary outputs are removed


def test_build_into_an_empty_cache_is_atomic_and_reused(fresh_build, monkeypatch):
    """A first build compiles into the cache (no temporary files left); a second process-level
    load reuses the file instead of compiling. (Built without optimisation: the real build takes
    ~10 s and the module fixture has already done it.)"""
    monkeypatch.setattr(cpu_c, "_FLAG_SETS", (("-O0", "-fopenmp-simd"),))
    assert cpu_c.is_available(), cpu_c.unavailable_reason()
    built = sorted(p.name for p in fresh_build.iterdir())
    assert len(built) == 2 and built[0].startswith("scan_cpu_c-") and built[0].endswith(".so")
    assert built[1] == built[0] + ".sha256"  # the checksum verified before every load
    mtime = (fresh_build / built[0]).stat().st_mtime_ns
    cpu_c._library.cache_clear()
    assert cpu_c.is_available()
    assert (fresh_build / built[0]).stat().st_mtime_ns == mtime
    case = Case(batch=2, dim=4, length=7, d_state=3)
    assert compare("cpu_c", case, torch.float64)["max_error"] <= F64_TOLERANCE


def test_second_order_gradients_are_refused_not_silently_wrong():
    case = Case(batch=1, dim=2, length=4, d_state=2)
    inputs = make_inputs(case, torch.float64)
    y = selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"],
                       backend="cpu_c")
    (du,) = torch.autograd.grad(y.square().sum(), inputs["u"], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        du.sum().backward()

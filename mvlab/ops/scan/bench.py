"""Benchmark of the selective-scan backends at MambaVision's stage shapes.

Times forward and forward+backward of every backend on the same inputs, interleaved round by
round (so a busy machine slows every backend alike), and reports each as a ratio to
``reference`` measured in the same run, plus the achieved memory bandwidth on a GPU.

    python -m mvlab.ops.scan.bench --device cpu --batch 8 --models T
    mvlab bench scan --device cuda --batch 128 --models T,S,B --out results/scan/gpu.csv
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from mvlab.ops.scan import BACKENDS, available_backends, resolve_backend

# The mixer runs the scan on C/2 channels over the tokens of one window (global at 224 px).
# (model, stage, width C of the stage); d_state 8 everywhere.
STAGES: dict[str, list[tuple[str, int, int]]] = {
    "T": [("s3", 320, 14 * 14), ("s4", 640, 7 * 7)],
    "S": [("s3", 384, 14 * 14), ("s4", 768, 7 * 7)],
    "B": [("s3", 512, 14 * 14), ("s4", 1024, 7 * 7)],
}
MODES = ("fwd", "fwdbwd")
# "token": what the mixer passes (u and delta are transposed views of (batch, L, channels)
# tensors, B and C views of x_proj's (batch, L, dt_rank + 2 d_state) output); "channel": every
# input contiguous as (batch, channels, L), mamba-ssm's layout.
LAYOUTS = ("token", "channel")


def stage_shapes(models: Iterable[str]) -> list[tuple[str, str, int, int]]:
    """(model, stage, scan channels, tokens) for the mixer stages of each model."""
    shapes = []
    for model in models:
        if model not in STAGES:
            from mvlab.ops.scan.args import ScanArgumentError
            raise ScanArgumentError(f"scan bench: unknown model {model!r}; choose from {', '.join(STAGES)}")
        shapes += [(model, stage, width // 2, tokens) for stage, width, tokens in STAGES[model]]
    return shapes


def _inputs(batch: int, dim: int, length: int, d_state: int, device, dtype,
            layout: str = "token") -> list[torch.Tensor]:
    """(u, delta, A, B, C, D, delta_bias), each a leaf that requires grad, in ``layout``."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, dim, length, generator=g)
    delta = torch.randn(batch, dim, length, generator=g) * 0.5 - 1.0
    A = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(dim, 1)
    B = torch.randn(batch, d_state, length, generator=g)
    C = torch.randn(batch, d_state, length, generator=g)
    D = torch.ones(dim)
    bias = torch.rand(dim, generator=g) * 0.1
    u, delta, B, C = (t.to(device=device, dtype=dtype) for t in (u, delta, B, C))
    if layout == "token":
        dt_rank = -(-dim * 2 // 16)  # the mixer's ceil(C / 16) for C = 2 * dim
        x_dbl = torch.zeros(batch, length, dt_rank + 2 * d_state, device=device, dtype=dtype)
        x_dbl[..., dt_rank:dt_rank + d_state] = B.transpose(1, 2)
        x_dbl[..., dt_rank + d_state:] = C.transpose(1, 2)
        # Views of tensors that need no grad are leaves, so they can require grad themselves.
        u, delta = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (u, delta))
        B = x_dbl[..., dt_rank:dt_rank + d_state].transpose(1, 2)
        C = x_dbl[..., dt_rank + d_state:].transpose(1, 2)
    elif layout != "channel":
        from mvlab.ops.scan.args import ScanArgumentError
        raise ScanArgumentError(f"scan bench: layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    tensors = [u, delta, A.to(device), B, C, D.to(device), bias.to(device)]
    return [t.requires_grad_() for t in tensors]


def _step(backend: str, inputs: list[torch.Tensor], mode: str, **backend_kwargs) -> None:
    u, delta, A, B, C, D, bias = inputs
    y = BACKENDS[backend](u, delta, A, B, C, D=D, delta_bias=bias, delta_softplus=True,
                          **backend_kwargs)
    if mode == "fwdbwd":
        y.backward(torch.ones_like(y))
        for t in inputs:
            t.grad = None


def _time_once(backend: str, inputs, mode: str, device: torch.device, iters: int,
               **backend_kwargs) -> float:
    """Seconds per call, averaged over ``iters`` back-to-back calls; ``backend_kwargs`` go to
    the backend (e.g. the triton backend's ``settings``)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    grad = torch.enable_grad() if mode == "fwdbwd" else torch.no_grad()
    with grad:
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            _step(backend, inputs, mode, **backend_kwargs)
        sync()
    return (time.perf_counter() - start) / iters


def min_bytes(batch: int, dim: int, length: int, d_state: int, mode: str, elem: int = 4) -> int:
    """Bytes a fused kernel must move at least: inputs read once, outputs written once."""
    bdl, bnl = batch * dim * length, batch * d_state * length
    fwd = 3 * bdl + 2 * bnl  # read u, delta, B, C; write y
    bwd = 5 * bdl + 4 * bnl  # read u, delta, dy, B, C; write du, ddelta, dB, dC
    return elem * (fwd if mode == "fwd" else fwd + bwd)


def copy_bandwidth(device: torch.device, megabytes: int = 512) -> float:
    """Device-to-device copy bandwidth in GB/s (read + write), the achievable ceiling."""
    n = megabytes * 2**20 // 4
    x = torch.empty(n, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    times = []
    for _ in range(10):
        start = time.perf_counter()
        y.copy_(x)
        sync()
        times.append(time.perf_counter() - start)
    return 2 * n * 4 / min(times) / 1e9


def _environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "host": platform.node(), "auto_backend": resolve_backend("auto", device)}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    else:
        env["device_name"] = platform.processor() or platform.machine()
        if hasattr(os, "getloadavg"):
            env["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return env


def run_scan_bench(device: str | torch.device = "cpu", batch: int = 8,
                   backends: Sequence[str] | None = None, models: Sequence[str] = ("T",),
                   d_state: int = 8, modes: Sequence[str] = MODES, rounds: int = 7,
                   warmup: int = 2, dtype: torch.dtype = torch.float32,
                   reference_rounds: int | None = None, progress: bool = True,
                   layout: str = "token", triton_settings=None) -> list[dict]:
    """Time every backend at every stage shape; one row per (shape, backend, mode).

    Rows hold the median and min seconds over ``rounds`` interleaved rounds, the ratio
    ``speedup_vs_reference`` (reference median / this median, same shape and mode), the achieved
    bandwidth and, on a GPU, its fraction of the measured copy bandwidth. ``layout``: the
    inputs' memory layout (``LAYOUTS``; "token" is what the MambaVision mixer passes).
    ``triton_settings``: the triton backend's ``LaunchSettings`` (default: its defaults)."""
    device = torch.device(device)
    kwargs = {name: {} for name in BACKENDS}
    if triton_settings is not None:
        kwargs["triton"] = {"settings": triton_settings}
    if backends is None:
        backends = available_backends(device)
        if device.type == "cpu":
            backends = [b for b in backends if b != "triton"]  # the interpreter is not a contender
    backends = list(dict.fromkeys(["reference", *backends]))
    for name in backends:
        resolve_backend(name, device)  # a clear error for names that cannot run here
    env = _environment(device)
    ceiling = copy_bandwidth(device) if device.type == "cuda" else None
    reference_rounds = reference_rounds or (max(3, rounds // 2) if device.type == "cpu" else rounds)

    shapes = stage_shapes(models)
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(shapes) * rounds, desc="scan bench", disable=not progress, file=sys.stderr)
    except ImportError:  # pragma: no cover
        bar = None
    rows = []
    for model, stage, dim, length in shapes:
        inputs = _inputs(batch, dim, length, d_state, device, dtype, layout)
        times: dict[tuple[str, str], list[float]] = {(b, m): [] for b in backends for m in modes}
        iters = {}
        for name in backends:
            for mode in modes:
                for _ in range(warmup):
                    t = _time_once(name, inputs, mode, device, 1, **kwargs[name])
                # GPU calls are short: repeat them so one measurement lasts >= ~20 ms.
                iters[name, mode] = max(1, min(200, int(0.02 / max(t, 1e-6)))) if device.type == "cuda" else 1
        for r in range(rounds):
            for name in backends:
                if name == "reference" and r >= reference_rounds:
                    continue
                for mode in modes:
                    times[name, mode].append(_time_once(name, inputs, mode, device,
                                                        iters[name, mode], **kwargs[name]))
            if bar is not None:
                bar.update()
        for mode in modes:
            ref_median = statistics.median(times["reference", mode])
            for name in backends:
                ts = times[name, mode]
                median = statistics.median(ts)
                moved = min_bytes(batch, dim, length, d_state, mode, torch.finfo(dtype).bits // 8)
                row = {"model": model, "stage": stage, "batch": batch, "dim": dim, "length": length,
                       "d_state": d_state, "dtype": str(dtype).removeprefix("torch."),
                       "layout": layout,
                       "backend": name, "mode": mode, "median_ms": round(median * 1e3, 4),
                       "min_ms": round(min(ts) * 1e3, 4), "rounds": len(ts),
                       "speedup_vs_reference": round(ref_median / median, 2),
                       "min_bytes": moved, "achieved_GBps": round(moved / median / 1e9, 2),
                       "copy_GBps": round(ceiling, 1) if ceiling else None,
                       "fraction_of_copy_bw": round(moved / median / 1e9 / ceiling, 3) if ceiling else None,
                       "device": device.type, **env}
                rows.append(row)
    if bar is not None:
        bar.close()
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table: one line per (shape, mode, backend)."""
    head = (f"{'shape':<22}{'layout':<9}{'mode':<8}{'backend':<11}{'median ms':>11}{'min ms':>10}"
            f"{'x ref':>8}{'GB/s':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = f"{r['model']}-{r['stage']} {r['batch']}x{r['dim']}x{r['length']}"
        bw = f"{r['achieved_GBps']:.1f}" + (f" ({r['fraction_of_copy_bw']:.0%})" if r["fraction_of_copy_bw"] else "")
        lines.append(f"{shape:<22}{r.get('layout', '-'):<9}{r['mode']:<8}{r['backend']:<11}{r['median_ms']:>11.3f}"
                     f"{r['min_ms']:>10.3f}{r['speedup_vs_reference']:>8.1f}{bw:>9}")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """Write ``rows`` to ``path`` (creating folders); columns are every key, in first-seen order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    return path


def add_scan_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The scan benchmark's options (used by ``python -m mvlab.ops.scan.bench`` and
    ``mvlab bench scan``)."""
    add = parser.add_argument
    add("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: cuda if present)")
    add("--batch", type=int, default=None, help="batch size (default: 8 on CPU, 128 on GPU)")
    add("--backends", default=None,
        help="comma-separated backends (default: all that run on the device; reference is always added)")
    add("--models", default="T", help="comma-separated stage-shape sets: T, S, B (default: T)")
    add("--d-state", type=int, default=8)
    add("--rounds", type=int, default=7, help="interleaved timing rounds (default: 7)")
    add("--layout", choices=LAYOUTS, default="token",
        help="inputs as the mixer passes them (token, default) or contiguous (channel)")
    add("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add("--out", default=None, help="CSV file to write the rows to")
    add("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mvlab.ops.scan.bench`` and ``mvlab bench scan``."""
    parser = add_scan_bench_arguments(argparse.ArgumentParser(
        prog="mvlab bench scan", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch or (128 if device.type == "cuda" else 8)
    backends = args.backends.split(",") if args.backends else None
    rows = run_scan_bench(device, batch, backends, models=args.models.split(","), d_state=args.d_state,
                          rounds=args.rounds, progress=not args.no_progress, layout=args.layout)
    env = {k: rows[0][k] for k in ("device_name", "torch", "threads", "auto_backend")}
    print(f"# {env} load={rows[0].get('load_avg_1m', '-')}")
    print(format_table(rows))
    if args.out:
        print(f"# wrote {write_csv(rows, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""GPU check of the selective-scan backends: equivalence on the device, tile sweep, benchmark.

    python scripts/gpu_check.py --out results/gpu

On a CUDA machine it runs, each section on its own (a failure is recorded and the next runs):

1. environment (torch, triton, device, whether mamba-ssm imports);
2. equivalence of ``triton`` (fp32 and float64), ``chunked`` and ``mamba_ssm`` (when it imports)
   against ``reference`` on the device: outputs, last state and all gradients;
3. a sweep of the Triton tile settings at the T stage-3 shape (the best one is used next);
4. the scan benchmark at the T/S/B stage shapes, batch 128: forward and forward+backward, ratio
   to ``reference`` and achieved bandwidth against a measured device copy;
5. MambaVision-T throughput per scan backend (``mvlab.training.bench.measure_throughput``) and a
   model-level check of triton against reference (loss and gradients).

Needs only torch and triton (numpy optional). Without a GPU it runs a CPU smoke version (chunked;
triton too when TRITON_INTERPRET=1) so the script itself can be debugged anywhere. Everything is
written under --out as JSON/CSV, also when a section fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataclasses import asdict  # noqa: E402

import torch  # noqa: E402

from mvlab.ops.scan import (
    available_backends,  # noqa: E402
    check,  # noqa: E402
)
from mvlab.ops.scan import bench as scan_bench  # noqa: E402
from mvlab.ops.scan import triton as scan_triton  # noqa: E402
from mvlab.ops.scan.triton import (  # noqa: E402
    DEFAULT_SETTINGS,
    ChunkTiles,
    LaunchSettings,
    LoopTiles,
)

SUMMARY: dict = {"sections": {}}
OUT_DIR: list[Path] = []  # where summary.json is rewritten after every section


def section(name: str):
    """Run the decorated function, record ok/failed, its result and timing in SUMMARY."""
    def wrap(fn):
        def run(*args, **kwargs):
            start = time.time()
            print(f"== {name}", flush=True)
            try:
                result = fn(*args, **kwargs)
                SUMMARY["sections"][name] = {"status": "ok", "seconds": round(time.time() - start, 1),
                                             "result": result}
            except Exception as exc:  # noqa: BLE001 - the point is to carry on
                traceback.print_exc()
                SUMMARY["sections"][name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                             "seconds": round(time.time() - start, 1)}
                result = None
            print(f"   {name}: {SUMMARY['sections'][name]['status']} "
                  f"({SUMMARY['sections'][name]['seconds']} s)", flush=True)
            if OUT_DIR:
                write_json(OUT_DIR[0], "summary.json", SUMMARY)
            return result
        return run
    return wrap


def write_json(out: Path, name: str, obj) -> None:
    (out / name).write_text(json.dumps(obj, indent=1, default=str))


@section("environment")
def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
           "available_backends": available_backends(device),
           "triton": getattr(scan_triton.triton, "__version__", None),
           "triton_interpreter": scan_triton.interpreter_enabled(),
           "triton_settings": asdict(DEFAULT_SETTINGS)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, sm_count=props.multi_processor_count,
                   memory_gb=round(props.total_memory / 2**30, 1))
    from mvlab.ops.scan import mamba_ssm
    env["mamba_ssm"] = mamba_ssm._kernel()[1] or "imports"
    print(json.dumps(env, indent=1))
    return env


@section("equivalence")
def equivalence(device: torch.device, out: Path, quick: bool) -> dict:
    backends = [b for b in ("triton", "chunked", "mamba_ssm") if b in available_backends(device)]
    if "triton" in backends:
        backends.insert(1, "triton:loop")
    n_cases, max_len, max_dim = (3, 12, 4) if quick else (6, 300, 16)
    rows = []
    for label in backends:
        name = label.split(":")[0]
        kwargs = {"settings": LaunchSettings(kernel="loop")} if label == "triton:loop" else {}
        dtypes = [torch.float32] + ([torch.float64] if name != "mamba_ssm" else [])
        for dtype in dtypes:
            cases = check.random_cases(n_cases if dtype == torch.float32 else max(2, n_cases // 2),
                                       seed=11, max_len=max_len, max_dim=max_dim)
            if not quick and dtype == torch.float32:  # one stage-sized problem
                cases.append(check.Case(batch=4, dim=160, length=196, d_state=8, has_z=False, seed=5))
            for case in cases:
                try:
                    r = check.compare(name, case, dtype, device, **kwargs)
                    r["ok"] = r["max_error"] <= check.tolerance(dtype)
                except Exception as exc:  # noqa: BLE001
                    r = {"dtype": str(dtype), "case": case.__dict__, "ok": False,
                         "error": f"{type(exc).__name__}: {exc}"}
                r["backend"] = label
                rows.append(r)
                print(f"   {label:<11} {str(dtype):<14} L={case.length:<4} N={case.d_state:<3} {case.bc:<8} "
                      f"max_rel_err={r.get('max_error', 'n/a')} ok={r['ok']}", flush=True)
    write_json(out, "equivalence.json", rows)
    return {"checked": len(rows), "failed": sum(not r["ok"] for r in rows),
            "worst": {b: max((r.get("max_error", float("inf")) for r in rows if r["backend"] == b), default=None)
                      for b in backends}}


@section("triton_tile_sweep")
def tile_sweep(device: torch.device, out: Path, batch: int) -> dict:
    """Time both Triton kernel families over a few tile settings at T stage 3; the best one that
    also passes the equivalence check is returned for the benchmark."""
    chunk_kernel = [LaunchSettings("chunk", chunk_tiles=ChunkTiles(e, c, w)) for e, c, w in
                    [(2048, 32, 4), (4096, 64, 4), (1024, 32, 2), (2048, 16, 4), (1024, 16, 2)]]
    loop_kernel = [LaunchSettings("loop", loop_tiles=LoopTiles(bd, c, w, st))
                   for bd, c, w, st in
                   [(32, 64, 1, 1), (16, 64, 1, 1), (64, 64, 2, 1), (32, 32, 1, 1), (128, 64, 4, 1),
                    (8, 64, 1, 1), (32, 64, 2, 1), (64, 64, 1, 1), (32, 64, 1, 3), (16, 64, 1, 3),
                    (64, 64, 2, 3), (32, 64, 1, 2)]]
    inputs = scan_bench._inputs(batch, 160, 196, 8, device, torch.float32)  # the mixer's layout
    ceiling = scan_bench.copy_bandwidth(device)
    rows, best = [], None
    for settings in chunk_kernel + loop_kernel:
        tiles = settings.chunk_tiles if settings.kernel == "chunk" else settings.loop_tiles
        row = {"kernel": settings.kernel, **asdict(tiles),
               "config": asdict(scan_triton.plan(160, 8, 196, settings))}
        try:
            for mode in scan_bench.MODES:
                scan_bench._time_once("triton", inputs, mode, device, 2, settings=settings)  # compile + warm
                row[f"{mode}_ms"] = round(1e3 * min(scan_bench._time_once("triton", inputs, mode, device, 20,
                                                                           settings=settings)
                                                    for _ in range(3)), 4)
                moved = scan_bench.min_bytes(batch, 160, 196, 8, mode)
                row[f"{mode}_of_copy_bw"] = round(moved / (row[f"{mode}_ms"] / 1e3) / 1e9 / ceiling, 3)
        except Exception as exc:  # noqa: BLE001 - e.g. out of registers/shared memory
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
        print("  ", row, flush=True)
        if "fwdbwd_ms" in row and (best is None or row["fwdbwd_ms"] < best[0]["fwdbwd_ms"]):
            best = (row, settings)
    # The sweep times settings the equivalence section did not check: check the winner.
    chosen = best[1] if best else DEFAULT_SETTINGS
    verdict = check.compare("triton", check.Case(batch=4, dim=160, length=196, d_state=8, seed=3,
                                                 token_major=True),
                            torch.float32, device, settings=chosen)
    winner_ok = verdict["max_error"] <= check.tolerance(torch.float32)
    scan_bench.write_csv(rows, out / "triton_tile_sweep.csv")
    # "settings" (the object) is what main hands to the benchmark; the summary holds its repr
    return {"best": best[0] if best else None, "best_max_rel_error": verdict["max_error"],
            "best_ok": winner_ok, "settings": chosen if winner_ok else DEFAULT_SETTINGS}


@section("scan_benchmark")
def benchmark(device: torch.device, out: Path, batch: int, models: list[str], rounds: int,
              settings: LaunchSettings | None = None) -> dict:
    # The mixer's token-major views at every shape, and T once more in the contiguous layout
    # that mamba-ssm uses (and that results of earlier runs were measured in).
    rows = scan_bench.run_scan_bench(device, batch, models=models, rounds=rounds, progress=False,
                                     triton_settings=settings)
    rows += scan_bench.run_scan_bench(device, batch, models=models[:1], rounds=rounds,
                                      progress=False, layout="channel", triton_settings=settings)
    print(scan_bench.format_table(rows), flush=True)
    scan_bench.write_csv(rows, out / "scan_bench.csv")
    return {f"{r['model']}-{r['stage']}/{r['layout']}/{r['mode']}/{r['backend']}":
            {"ms": r["median_ms"], "x_ref": r["speedup_vs_reference"], "GBps": r["achieved_GBps"],
             "of_copy_bw": r["fraction_of_copy_bw"]} for r in rows}


@section("model")
def model_checks(device: torch.device, out: Path, batch: int) -> dict:
    from mvlab.models import build_model

    result = {}
    # Same loss and gradients with triton as with reference (fp32, small batch).
    torch.manual_seed(0)
    model = build_model("T", num_classes=10).to(device)
    x = torch.randn(2, 3, 224, 224, device=device)
    target = torch.tensor([1, 7], device=device)
    grads = {}
    for name in [b for b in ("reference", "triton", "chunked") if b in available_backends(device)]:
        model.set_scan_backend(name)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same drop-path masks for every backend
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        grads[name] = (loss.detach(), [p.grad.detach().clone() for p in model.parameters() if p.grad is not None])
    base_loss, base_grads = grads["reference"]
    for name, (loss, gs) in grads.items():
        scale = max(float(g.abs().max()) for g in base_grads)  # relative to the largest entry
        rel = max(float((a - b).abs().max()) for a, b in zip(gs, base_grads, strict=True)) / scale
        result[f"{name}_vs_reference"] = {"loss_diff": float((loss - base_loss).abs()),
                                          "max_grad_diff_rel_to_largest": rel}
    print(json.dumps(result, indent=1), flush=True)
    try:
        from mvlab.training.bench import measure_throughput
    except ImportError as exc:
        result["throughput"] = f"skipped: {exc}"
        return result
    rows = []
    for name in [b for b in ("triton", "mamba_ssm", "chunked") if b in available_backends(device)]:
        for mode in ("infer", "train"):
            try:
                row = measure_throughput("T", mode=mode, batch_size=batch, device=device,
                                         scan_backend=name, warmup=5, steps=15, repeats=3,
                                         complexity=False)
            except Exception as exc:  # noqa: BLE001
                row = {"model": "T", "mode": mode, "scan_backend": name, "error": str(exc)[:300]}
            rows.append(row)
            print(f"   T {mode:<5} {name:<9} {row.get('img_s_median', row.get('error'))} img/s "
                  f"({row.get('precision', '')}, batch {row.get('batch_size', batch)})", flush=True)
    if rows:
        scan_bench.write_csv(rows, out / "model_throughput.csv")
    result["throughput"] = {f"{r['mode']}/{r['scan_backend']}": r.get("img_s_median", r.get("error")) for r in rows}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/gpu", help="folder for the JSON/CSV results")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=None, help="default 128 on GPU, 2 on CPU")
    parser.add_argument("--models", default="T,S,B")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: "
                        "equivalence,sweep,bench,model")
    args = parser.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    OUT_DIR.append(out)
    skip = set(filter(None, args.skip.split(",")))
    batch = args.batch or (128 if gpu else 2)
    started = time.time()

    environment(device)
    if "equivalence" not in skip:
        equivalence(device, out, quick=not gpu)
    swept = None  # without a sweep the triton backend runs its defaults
    if gpu and "triton" in available_backends(device) and "sweep" not in skip:
        swept = tile_sweep(device, out, batch)
    if "bench" not in skip:
        benchmark(device, out, batch, args.models.split(",") if gpu else ["T"], args.rounds or (5 if gpu else 2),
                  settings=swept["settings"] if swept else None)
    if gpu and "model" not in skip:
        model_checks(device, out, batch)
    SUMMARY["seconds"] = round(time.time() - started, 1)
    write_json(out, "summary.json", SUMMARY)
    failed = [k for k, v in SUMMARY["sections"].items() if v["status"] != "ok"]
    print(f"== done in {SUMMARY['seconds']} s; failed sections: {failed or 'none'}; results in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

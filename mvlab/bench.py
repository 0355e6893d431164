"""Throughput measured the timm way, stored with every setting that produced it.

    from mvlab.bench import measure_throughput, run_benchmarks
    row = measure_throughput("T", mode="infer", batch_size=128, img_size=224, precision="fp16")
    rows = run_benchmarks(["T", "convnext_tiny"], modes=("infer",), out_dir="results/bench")

Method: synthetic input already on the device, the model in eval mode under ``inference_mode``
(infer) or doing full forward/backward/optimiser steps (train), ``warmup`` untimed steps, then
``repeats`` timed runs of ``steps`` steps each with a device synchronise at every step boundary.
The median of the repeats' images/s is reported with its spread (quartiles, min, max). An
out-of-memory error retries at half the batch until batch 1; the batch actually used is stored.
"""
from __future__ import annotations

import csv
import datetime as _dt
import os
import re
import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import mvlab
from mvlab.errors import UserError
from mvlab.training.checkpoint import atomic_write
from mvlab.training.complexity import model_complexity
from mvlab.training.models import make_model
from mvlab.training.runtime import (
    autocast,
    compile_mode,
    cpu_threads,
    device_name,
    free_memory,
    is_out_of_memory,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
    scan_backend_of,
    software_versions,
    synchronize,
)

MODES = ("infer", "train")
DEFAULT_OUT_DIR = "results/bench"

# Column order of the CSVs: settings first, then the measurement.
COLUMNS = (
    "model", "spec", "mode", "device", "device_name", "torch", "cuda", "cudnn", "precision",
    "channels_last", "compile", "batch_size", "requested_batch_size", "img_size", "in_chans",
    "num_classes", "scan_backend", "params", "macs", "macs_with_scan", "macs_method", "warmup",
    "steps", "repeats", "threads", "status", "img_s_median", "img_s_q1", "img_s_q3", "img_s_min",
    "img_s_max", "step_ms_median", "peak_mem_mb", "mvlab", "timestamp",
)


def measure_throughput(model_or_name: nn.Module | str, mode: str = "infer", batch_size: int = 128,
                       img_size: int = 224, device: str | torch.device = "auto",
                       precision: str | None = "auto", channels_last: bool | None = None,
                       compile: bool | str = False, warmup: int = 10, steps: int = 40,
                       repeats: int = 5, scan_backend: str = "auto", num_classes: int = 1000,
                       in_chans: int = 3, complexity: bool = True,
                       threads: int | None = None) -> dict[str, Any]:
    """Images/s of one model in one setting, as one CSV row (a dict with ``COLUMNS``).

    ``model_or_name``: an mvlab preset or spec string, any timm model name, or a built module
    (``infer`` leaves its weights alone; ``train`` updates them with SGD steps, so pass a
    throwaway). ``precision``: ``auto`` (bf16/fp16 autocast on GPUs, fp32 on the CPU),
    ``fp32``, ``fp16`` (= timm's ``amp``) or ``bf16``. ``channels_last``: ``None`` = on (CUDA, CPU).
    ``compile``: ``False`` or a ``torch.compile`` mode. ``status`` is ``ok`` or ``oom`` (no batch
    size fitted). ``threads``: CPU threads while measuring (``None``: torch's current setting).
    Cheap enough to call before a trial with small ``warmup/steps/repeats``.
    """
    with cpu_threads(threads):
        return _measure(model_or_name, mode, batch_size, img_size, device, precision,
                        channels_last, compile, warmup, steps, repeats, scan_backend,
                        num_classes, in_chans, complexity)


def _measure(model_or_name, mode, batch_size, img_size, device, precision, channels_last,
             compile, warmup, steps, repeats, scan_backend, num_classes, in_chans,
             complexity) -> dict[str, Any]:
    if mode not in MODES:
        raise UserError(f"bench mode {mode!r}: use one of {', '.join(MODES)}")
    for key, value in (("batch_size", batch_size), ("img_size", img_size), ("steps", steps),
                       ("repeats", repeats)):
        if int(value) < 1:
            raise UserError(f"bench {key}={value}: must be a positive integer")
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    nhwc = resolve_channels_last(channels_last, dev)
    cmode = compile_mode(compile)
    if cmode:
        # The first calls of a compiled model compile (and, for reduce-overhead, record CUDA
        # graphs); they must never land in the timed steps.
        warmup = max(int(warmup), 3)
    _tune_backends(dev)

    name, model = _make_model(model_or_name, num_classes, in_chans, scan_backend)
    model.to(dev)
    if nhwc:
        model.to(memory_format=torch.channels_last)
    row: dict[str, Any] = {
        "model": name, "spec": str(getattr(model, "spec", None) or "n/a"), "mode": mode,
        "device": str(dev), "device_name": device_name(dev), **software_versions(),
        "precision": prec, "channels_last": nhwc, "compile": cmode or "none",
        "requested_batch_size": int(batch_size), "img_size": int(img_size),
        "in_chans": int(in_chans), "num_classes": int(num_classes),
        "scan_backend": scan_backend_of(model, dev),
        "warmup": int(warmup), "steps": int(steps), "repeats": int(repeats),
        "threads": torch.get_num_threads() if dev.type == "cpu" else "n/a",
        "mvlab": mvlab.__version__,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if complexity:
        row.update(model_complexity(model, img_size, num_classes, in_chans))
    else:
        row.update(params=sum(p.numel() for p in model.parameters()), macs="n/a",
                   macs_with_scan="n/a", macs_method="skipped")

    batch = int(batch_size)
    while True:
        try:
            timings = _time_steps(model, mode, batch, img_size, in_chans, num_classes, dev, prec,
                                  nhwc, cmode, warmup, steps, repeats)
            break
        except Exception as exc:  # noqa: BLE001 - only OOM is retried, the rest re-raised
            if not is_out_of_memory(exc):
                raise
            model.zero_grad(set_to_none=True)
            free_memory(dev)
            if batch == 1:
                timings = None
                break
            batch = max(1, batch // 2)
    row["batch_size"] = batch
    row.update(_summarise(timings, batch, steps))
    row["peak_mem_mb"] = (round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
                          if dev.type == "cuda" else "n/a")
    return {key: row.get(key, "n/a") for key in COLUMNS}


def _tune_backends(device: torch.device) -> None:
    # timm's benchmark settings: let cuDNN pick the fastest kernels and allow TF32 matmuls.
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _make_model(model_or_name: nn.Module | str, num_classes: int, in_chans: int,
                scan_backend: str) -> tuple[str, nn.Module]:
    if isinstance(model_or_name, nn.Module):
        model = model_or_name
        if getattr(model, "spec", None):
            from mvlab.models import set_scan_backend
            set_scan_backend(model, scan_backend)
        name = getattr(model, "default_cfg", {}).get("architecture") or type(model).__name__
        return name, model
    return str(model_or_name), make_model(str(model_or_name), num_classes, in_chans, scan_backend)


def _time_steps(model: nn.Module, mode: str, batch: int, img_size: int, in_chans: int,
                num_classes: int, device: torch.device, precision: str, channels_last: bool,
                cmode: str | None, warmup: int, steps: int, repeats: int) -> list[list[float]]:
    """Per-step seconds, one list per repeat."""
    x = torch.randn(batch, in_chans, img_size, img_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    run = torch.compile(model, mode=cmode) if cmode else model
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    if mode == "infer":
        model.eval()

        def step() -> None:
            with torch.inference_mode(), autocast(device, precision):
                run(x)
    else:
        model.train()
        target = torch.randint(0, num_classes, (batch,), device=device)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

        def step() -> None:
            with autocast(device, precision):
                loss = F.cross_entropy(run(x), target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    for _ in range(warmup):
        step()
    synchronize(device)
    timings = []
    for _ in range(repeats):
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            synchronize(device)
            times.append(time.perf_counter() - start)
        timings.append(times)
    return timings


def _summarise(timings: list[list[float]] | None, batch: int, steps: int) -> dict[str, Any]:
    if not timings:
        return {"status": "oom", "img_s_median": 0.0, "img_s_q1": 0.0, "img_s_q3": 0.0,
                "img_s_min": 0.0, "img_s_max": 0.0, "step_ms_median": "n/a"}
    rates = sorted(batch * len(times) / sum(times) for times in timings)
    q1, _, q3 = statistics.quantiles(rates, n=4, method="inclusive") if len(rates) > 1 else rates * 3
    all_steps = [t for times in timings for t in times]
    return {"status": "ok", "img_s_median": round(statistics.median(rates), 2),
            "img_s_q1": round(q1, 2), "img_s_q3": round(q3, 2), "img_s_min": round(rates[0], 2),
            "img_s_max": round(rates[-1], 2),
            "step_ms_median": round(1000 * statistics.median(all_steps), 3)}


# -- CSVs -----------------------------------------------------------------------------------

def csv_name(row: dict[str, Any]) -> str:
    """File name from the settings, like timm's ``infer-amp-nhwc-pt240-cu124-rtx4090.csv``:
    ``<mode>-<precision>-<nhwc|nchw>-<compile>-pt<torch>-<cu<cuda>|cpu>-<device>.csv``."""
    layout = "nhwc" if str(row["channels_last"]).lower() == "true" else "nchw"
    compiled = "eager" if row["compile"] in ("none", None) else f"compile_{row['compile']}"
    backend = f"cu{row['cuda']}" if str(row["device"]).startswith("cuda") else "cpu"
    parts = [row["mode"], row["precision"], layout, compiled, f"pt{row['torch']}", backend,
             row["device_name"]]
    return "-".join(_slug(str(p)) for p in parts) + ".csv"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "_", text.lower()).strip("_") or "unknown"


def append_rows(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> Path:
    """Append ``rows`` to the CSV at ``path`` (created with a header when new). A file with other
    columns (an older mvlab) is rewritten with the union of both, old rows kept."""
    path = Path(path)
    existing: list[dict[str, Any]] = []
    columns = list(COLUMNS)
    if path.exists():
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            existing = list(reader)
            old_columns = list(reader.fieldnames or [])
        if old_columns == columns:
            with open(path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=columns).writerows(rows)
            return path
        columns += [c for c in old_columns if c not in columns]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(existing)
            writer.writerows(rows)
    return atomic_write(path, write)


def run_benchmarks(models: Iterable[str | nn.Module], modes: Sequence[str] = ("infer",),
                   out_dir: str | os.PathLike | None = DEFAULT_OUT_DIR, progress: bool = False,
                   **settings: Any) -> list[dict[str, Any]]:
    """Measure every model in every mode with the same ``settings`` (``measure_throughput``
    keywords) and append each row to its CSV under ``out_dir`` (``None``: do not write)."""
    from tqdm.auto import tqdm

    jobs = [(m, mode) for m in models for mode in modes]
    rows = []
    for model, mode in tqdm(jobs, desc="bench", disable=not progress, leave=False):
        row = measure_throughput(model, mode=mode, **settings)
        if out_dir is not None:
            row_path = Path(out_dir) / csv_name(row)
            append_rows(row_path, [row])
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of the rows' key numbers for the terminal."""
    head = ("model", "mode", "precision", "batch", "img", "params(M)", "GMACs", "img/s median",
            "q1-q3", "min-max")
    lines = [head]
    for r in rows:
        macs = r["macs"]
        lines.append((
            str(r["model"])[:40], r["mode"], r["precision"], str(r["batch_size"]), str(r["img_size"]),
            f"{r['params'] / 1e6:.2f}" if isinstance(r["params"], int) else str(r["params"]),
            f"{macs / 1e9:.3f}" if isinstance(macs, int) else str(macs),
            f"{r['img_s_median']:.1f}" if r["status"] == "ok" else "OOM",
            f"{r['img_s_q1']:.1f}-{r['img_s_q3']:.1f}", f"{r['img_s_min']:.1f}-{r['img_s_max']:.1f}",
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)

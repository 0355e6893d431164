"""Throughput measured the timm way, stored with every setting that produced it.

    from mvlab.training.bench import measure_throughput, measure_interleaved, run_benchmarks
    row = measure_throughput("T", mode="infer", batch_size=128, img_size=224, precision="fp16")
    rows = measure_interleaved(["proxy", "tiny"], rounds=5, img_size=48, threads=1)
    rows = run_benchmarks(["T", "convnext_tiny"], modes=("infer",), out_dir="bench")

Method: synthetic input already on the device, the model in eval mode under ``inference_mode``
(infer) or doing full forward/backward/optimiser steps (train), ``warmup`` untimed steps, then
``repeats`` timed runs of ``steps`` steps each with a device synchronise at every step boundary.
The median of the repeats' images/s is reported with its spread (quartiles, min, max, relative
interquartile range). An out-of-memory error retries at half the batch until batch 1; the batch
actually used is stored.

The clock (``clock`` column): on a GPU, wall time. On a CPU, wall time counts every moment the
process waited for a core that another job held, so on a shared machine it measures the load as
much as the model; CPU time counts only the cycles the model's work ran. With one torch thread
all of that work runs on the calling thread (``thread_cpu``: ``time.thread_time``, blind to
other threads of the process too); with more, torch's intra-op threads run part of it, and the
clock is the process's CPU time over the thread count (``process_cpu``: includes OpenMP
spin-waits and any other thread of the process, so it is the less stable of the two). Wall time
is recorded beside either (``wall_img_s_*``).
"""
from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import mvlab
from mvlab.errors import UserError
from mvlab.training.checkpoint import atomic_write
from mvlab.training.complexity import model_complexity
from mvlab.training.config import bench_limit_error
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
CLOCKS = ("auto", "thread_cpu", "process_cpu", "wall")

# Column order of the CSVs: settings first, then the measurement. ``img_s_*`` and
# ``step_ms_median`` are on ``clock``; ``wall_img_s_*`` are wall time beside it; ``spread`` is the
# interquartile range of the repeats over their median, ``spread_range`` (max - min) over median;
# ``img_s_ci_low``/``_high`` a distribution-free 95 % interval of the median (``median_ci``);
# ``img_s_repeats``/``wall_img_s_repeats`` hold every repeat (round) as ``;``-separated numbers.
COLUMNS = (
    "model", "spec", "mode", "device", "device_name", "torch", "cuda", "cudnn", "precision",
    "channels_last", "compile", "batch_size", "requested_batch_size", "img_size", "in_chans",
    "num_classes", "scan_backend", "params", "macs", "macs_with_scan", "macs_method", "warmup",
    "steps", "repeats", "schedule", "threads", "clock", "status", "img_s_median", "img_s_q1",
    "img_s_q3", "img_s_min", "img_s_max", "img_s_ci_low", "img_s_ci_high", "spread",
    "spread_range", "step_ms_median",
    "wall_img_s_median", "wall_img_s_min", "wall_img_s_max", "img_s_repeats",
    "wall_img_s_repeats", "peak_mem_mb", "mvlab", "timestamp",
)

_CPU_CLOCKS: dict[str, Callable[[], float]] = {"thread_cpu": time.thread_time,
                                               "process_cpu": time.process_time}


def resolve_clock(clock: str | None, device: torch.device, threads: int) -> str:
    """The clock a measurement uses: ``auto`` is ``thread_cpu`` on a CPU with one torch thread,
    ``process_cpu`` on a CPU with more, ``wall`` on any other device (whose work a CPU clock
    does not see)."""
    value = "auto" if clock in (None, "") else str(clock)
    if value not in CLOCKS:
        raise UserError(f"bench clock={clock!r}: use one of {', '.join(CLOCKS)}")
    if device.type != "cpu":
        if value not in ("auto", "wall"):
            raise UserError(f"bench clock={value} on {device}: a CPU clock does not see the "
                            f"device's work; use clock=wall or auto")
        return "wall"
    if value == "auto":
        return "thread_cpu" if threads == 1 else "process_cpu"
    if value == "thread_cpu" and threads != 1:
        raise UserError(f"bench clock=thread_cpu with threads={threads}: the calling thread does "
                        f"only part of the work; use threads=1, or clock=process_cpu or auto")
    return value


def measure_throughput(model_or_name: nn.Module | str, mode: str = "infer", batch_size: int = 128,
                       img_size: int = 224, device: str | torch.device = "auto",
                       precision: str | None = "auto", channels_last: bool | None = None,
                       compile: bool | str = False, warmup: int = 10, steps: int = 40,
                       repeats: int = 5, scan_backend: str = "auto", num_classes: int = 1000,
                       in_chans: int = 3, complexity: bool = True,
                       threads: int | None = None, clock: str = "auto") -> dict[str, Any]:
    """Images/s of one model in one setting, as one CSV row (a dict with ``COLUMNS``).

    ``model_or_name``: an mvlab preset or spec string, any timm model name, or a built module
    (``infer`` leaves its weights alone; ``train`` updates them with SGD steps, so pass a
    throwaway). ``precision``: ``auto`` (bf16/fp16 autocast on GPUs, fp32 on the CPU),
    ``fp32``, ``fp16`` (= timm's ``amp``) or ``bf16``. ``channels_last``: ``None`` = on (CUDA, CPU).
    ``compile``: ``False`` or a ``torch.compile`` mode. ``status`` is ``ok`` or ``oom`` (no batch
    size fitted). ``threads``: CPU threads while measuring (``None``: torch's current setting).
    ``clock``: see ``resolve_clock`` and the module docstring.
    Cheap enough to call before a trial with small ``warmup/steps/repeats``.
    """
    check_limits({"threads": threads})
    with cpu_threads(threads):
        setting = _Setting.resolve(mode, batch_size, img_size, device, precision, channels_last,
                                   compile, warmup, steps, repeats, num_classes, in_chans, clock)
        bench = _Bench.build(model_or_name, setting, scan_backend, complexity)
        while True:
            try:
                bench.prepare()
                bench.warm_up()
                samples = [bench.time_repeat() for _ in range(setting.repeats)]
                break
            except Exception as exc:  # noqa: BLE001 - only OOM is retried, the rest re-raised
                if not bench.shrink_after(exc):
                    samples = None
                    break
        return bench.row(samples, schedule="consecutive")


def measure_interleaved(models: Sequence[str | nn.Module], rounds: int = 5, mode: str = "infer",
                        batch_size: int = 128, img_size: int = 224,
                        device: str | torch.device = "auto", precision: str | None = "auto",
                        channels_last: bool | None = None, compile: bool | str = False,
                        warmup: int = 10, steps: int = 40, scan_backend: str = "auto",
                        num_classes: int = 1000, in_chans: int = 3, complexity: bool = True,
                        threads: int | None = None, clock: str = "auto",
                        on_round: Callable[[int, int], None] | None = None
                        ) -> list[dict[str, Any]]:
    """One row per model (``measure_throughput``'s columns, ``repeats`` = ``rounds``,
    ``schedule`` = ``interleaved:<n models>``), measured in rounds: each round times ``steps``
    steps of every model in the given order (A B C A B C ...), so a change of load or clock
    speed during the run hits every model alike instead of whichever ran at that moment.

    Every model is built, fitted to a batch (out-of-memory halves it) and warmed up before the
    first round, and kept for all rounds. ``on_round(done, rounds)`` is called after each round.
    Keywords as ``measure_throughput``'s."""
    if int(rounds) < 1:
        raise UserError(f"bench rounds={rounds}: must be a positive integer")
    check_limits({"threads": threads})
    with cpu_threads(threads):
        setting = _Setting.resolve(mode, batch_size, img_size, device, precision, channels_last,
                                   compile, warmup, steps, rounds, num_classes, in_chans, clock)
        benches = [_Bench.build(m, setting, scan_backend, complexity) for m in models]
        samples: list[list[tuple[float, float]] | None] = []
        for bench in benches:
            samples.append(bench.fit())
        for done in range(int(rounds)):
            for i, bench in enumerate(benches):
                if samples[i] is None:
                    continue
                try:
                    samples[i].append(bench.time_repeat())
                except Exception as exc:  # noqa: BLE001 - only OOM is recorded, the rest raised
                    if not _out_of_memory(exc):
                        raise
                    samples[i] = None
                    bench.release()
            if on_round is not None:
                on_round(done + 1, int(rounds))
        schedule = f"interleaved:{len(benches)}"
        return [b.row(s, schedule=schedule) for b, s in zip(benches, samples, strict=True)]


@dataclass(frozen=True)
class _Setting:
    """One validated, resolved benchmark setting shared by every model measured with it."""

    mode: str
    batch_size: int
    img_size: int
    device: torch.device
    precision: str
    channels_last: bool
    compile: str | None
    warmup: int
    steps: int
    repeats: int
    num_classes: int
    in_chans: int
    threads: int | None
    clock: str

    @classmethod
    def resolve(cls, mode, batch_size, img_size, device, precision, channels_last, compile,
                warmup, steps, repeats, num_classes, in_chans, clock) -> _Setting:
        if mode not in MODES:
            raise UserError(f"bench mode {mode!r}: use one of {', '.join(MODES)}")
        check_limits({"mode": mode, "batch_size": batch_size, "img_size": img_size,
                      "steps": steps, "repeats": repeats, "warmup": warmup,
                      "num_classes": num_classes})
        dev = resolve_device(device)
        _check_input_fits(int(batch_size), int(in_chans), int(img_size), dev)
        cmode = compile_mode(compile)
        if cmode:
            # The first calls of a compiled model compile (and, for reduce-overhead, record CUDA
            # graphs); they must never land in the timed steps.
            warmup = max(int(warmup), 3)
        _tune_backends(dev)
        threads = torch.get_num_threads() if dev.type == "cpu" else None
        return cls(mode, int(batch_size), int(img_size), dev, resolve_precision(precision, dev),
                   resolve_channels_last(channels_last, dev), cmode, int(warmup), int(steps),
                   int(repeats), int(num_classes), int(in_chans), threads,
                   resolve_clock(clock, dev, threads or 1))


def check_limits(settings: dict[str, Any], options: bool = False) -> None:
    """UserError unless every count in ``settings`` (``measure_throughput`` keywords; others are
    ignored) is an integer within the bounds a study's bench: section has (``BENCH_LIMITS``, one
    table): past them a run only allocates or loops for hours. ``options``: name them as
    `mvlab bench`'s options (``--batch-size``) rather than keywords."""
    def name(key: str, value: Any) -> str:
        return f"--{key.replace('_', '-')} {value}" if options else f"bench {key}={value}"

    for key, value in settings.items():
        if key == "mode" or value is None:
            continue
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise UserError(f"{name(key, repr(value))}: must be an integer") from None
        why = bench_limit_error(key, number)
        if why:
            raise UserError(f"{name(key, value)}: {why}")
    if settings.get("mode") in ("train", "both") and settings.get("num_classes") == 0:
        raise UserError(f"{name('num_classes', 0)} in train mode: a training step needs a "
                        f"classifier head to compute a loss; use a number >= 1")


def _available_bytes(device: torch.device) -> int | None:
    """Memory a new tensor on ``device`` can take now, or None where that is not known."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def _check_input_fits(batch: int, in_chans: int, img_size: int, device: torch.device) -> None:
    """UserError when the synthetic input batch alone (fp32) exceeds the device's free memory:
    halving the batch from there would allocate, fail and retry many times (on Linux's
    overcommitted host memory a large try can be killed rather than fail). The activations need
    several times more; those too-large batches are left to the out-of-memory retry."""
    need = batch * in_chans * img_size * img_size * 4
    free = _available_bytes(device)
    if free is not None and need > free:
        raise UserError(f"bench batch_size={batch} x img_size={img_size}: the input batch alone "
                        f"is {need / 2**30:.1f} GiB, above the {free / 2**30:.1f} GiB free on "
                        f"{device}; lower --batch-size or --img-size")


def _out_of_memory(exc: BaseException) -> bool:
    """``runtime.is_out_of_memory``, plus the CPU allocator's own failure, whose message reads
    "can't allocate memory" rather than "out of memory"."""
    return is_out_of_memory(exc) or (isinstance(exc, RuntimeError)
                                     and "can't allocate memory" in str(exc))


class _Bench:
    """One model on the device with its synthetic batch and a ``step`` to time."""

    def __init__(self, name: str, model: nn.Module, setting: _Setting, row: dict[str, Any]):
        self.name, self.model, self.setting, self.base_row = name, model, setting, row
        self.batch = setting.batch_size
        self.step: Callable[[], None] | None = None

    @classmethod
    def build(cls, model_or_name: nn.Module | str, setting: _Setting, scan_backend: str,
              complexity: bool) -> _Bench:
        name, model = _make_model(model_or_name, setting.num_classes, setting.in_chans,
                                  scan_backend)
        dev = setting.device
        model.to(dev)
        if setting.channels_last:
            model.to(memory_format=torch.channels_last)
        versions = software_versions()
        if dev.type != "cuda":  # the torch build's CUDA says nothing about a CPU measurement
            versions.update(cuda="n/a", cudnn="n/a")
        row: dict[str, Any] = {
            "model": name, "spec": str(getattr(model, "spec", None) or "n/a"),
            "mode": setting.mode, "device": str(dev), "device_name": device_name(dev),
            **versions, "precision": setting.precision,
            "channels_last": setting.channels_last, "compile": setting.compile or "none",
            "requested_batch_size": setting.batch_size, "img_size": setting.img_size,
            "in_chans": setting.in_chans, "num_classes": setting.num_classes,
            "scan_backend": scan_backend_of(model, dev), "warmup": setting.warmup,
            "steps": setting.steps, "repeats": setting.repeats,
            "threads": setting.threads if setting.threads is not None else "n/a",
            "clock": setting.clock, "mvlab": mvlab.__version__,
        }
        if complexity:
            row.update(model_complexity(model, setting.img_size, setting.num_classes,
                                        setting.in_chans))
        else:
            row.update(params=sum(p.numel() for p in model.parameters()), macs="n/a",
                       macs_with_scan="n/a", macs_method="skipped")
        return cls(name, model, setting, row)

    def prepare(self) -> None:
        """Input and ``step`` at the current batch."""
        s, model = self.setting, self.model
        x = torch.randn(self.batch, s.in_chans, s.img_size, s.img_size, device=s.device)
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        run = torch.compile(model, mode=s.compile) if s.compile else model
        if s.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(s.device)
        if s.mode == "infer":
            model.eval()

            def step() -> None:
                with torch.inference_mode(), autocast(s.device, s.precision):
                    run(x)
        else:
            model.train()
            target = torch.randint(0, s.num_classes, (self.batch,), device=s.device)
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
            scaler = torch.amp.GradScaler(s.device.type, enabled=s.precision == "fp16")

            def step() -> None:
                with autocast(s.device, s.precision):
                    loss = F.cross_entropy(run(x), target)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
        self.step = step

    def warm_up(self, at_least: int = 0) -> None:
        for _ in range(max(self.setting.warmup, at_least)):
            self.step()
        synchronize(self.setting.device)

    def time_repeat(self) -> list[tuple[float, float]]:
        """(clock, wall) seconds of each of ``steps`` steps, synchronised at every boundary."""
        s = self.setting
        cpu_clock = _CPU_CLOCKS.get(s.clock)
        # process_cpu adds up every thread's time: over the thread count it estimates the wall
        # time of the same work on that many cores of one's own.
        share = (s.threads or 1) if s.clock == "process_cpu" else 1
        times = []
        for _ in range(s.steps):
            cpu0, wall0 = (cpu_clock() if cpu_clock else 0.0), time.perf_counter()
            self.step()
            synchronize(s.device)
            wall = time.perf_counter() - wall0
            times.append(((cpu_clock() - cpu0) / share if cpu_clock else wall, wall))
        return times

    def shrink_after(self, exc: BaseException) -> bool:
        """After an error: True when it was out-of-memory and a smaller batch is left to try
        (the batch is halved); False when out of memory at batch 1; re-raises anything else."""
        if not _out_of_memory(exc):
            raise exc
        self.release()
        if self.batch == 1:
            return False
        self.batch = max(1, self.batch // 2)
        return True

    def fit(self) -> list | None:
        """Prepare and warm up (at least one step) at the largest batch that fits: an empty
        sample list to fill, or None when not even batch 1 fits."""
        while True:
            try:
                self.prepare()
                self.warm_up(at_least=1)
                return []
            except Exception as exc:  # noqa: BLE001 - shrink_after re-raises all but OOM
                if not self.shrink_after(exc):
                    return None

    def release(self) -> None:
        self.step = None
        self.model.zero_grad(set_to_none=True)
        free_memory(self.setting.device)

    def row(self, samples: list[list[tuple[float, float]]] | None, schedule: str
            ) -> dict[str, Any]:
        dev = self.setting.device
        row = {**self.base_row, "batch_size": self.batch, "schedule": schedule,
               "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               **_summarise(samples, self.batch)}
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


def _summarise(samples: list[list[tuple[float, float]]] | None, batch: int) -> dict[str, Any]:
    """Per-repeat images/s on the clock and on the wall, with their median and spread."""
    if not samples:
        return {"status": "oom", "img_s_median": 0.0, "img_s_q1": 0.0, "img_s_q3": 0.0,
                "img_s_min": 0.0, "img_s_max": 0.0, "img_s_ci_low": 0.0, "img_s_ci_high": 0.0,
                "spread": "n/a", "spread_range": "n/a",
                "step_ms_median": "n/a", "wall_img_s_median": 0.0, "wall_img_s_min": 0.0,
                "wall_img_s_max": 0.0, "img_s_repeats": "", "wall_img_s_repeats": ""}
    rates = [batch * len(times) / sum(t for t, _ in times) for times in samples]
    walls = [batch * len(times) / sum(w for _, w in times) for times in samples]
    ordered = sorted(rates)
    q1, median, q3 = (statistics.quantiles(ordered, n=4, method="inclusive")
                      if len(ordered) > 1 else ordered * 3)
    steps = [t for times in samples for t, _ in times]
    low, high = median_ci(rates)
    return {"status": "ok", "img_s_median": round(median, 2), "img_s_q1": round(q1, 2),
            "img_s_q3": round(q3, 2), "img_s_min": round(ordered[0], 2),
            "img_s_max": round(ordered[-1], 2), "img_s_ci_low": round(low, 2),
            "img_s_ci_high": round(high, 2),
            "spread": round((q3 - q1) / median, 4),
            "spread_range": round((ordered[-1] - ordered[0]) / median, 4),
            "step_ms_median": round(1000 * statistics.median(steps), 3),
            "wall_img_s_median": round(statistics.median(walls), 2),
            "wall_img_s_min": round(min(walls), 2), "wall_img_s_max": round(max(walls), 2),
            "img_s_repeats": ";".join(f"{r:.2f}" for r in rates),
            "wall_img_s_repeats": ";".join(f"{w:.2f}" for w in walls)}


def median_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median of ``values``: the order statistics
    ``x(j)`` and ``x(n+1-j)`` with the largest ``j`` whose coverage, 1 - 2 P(Binomial(n, 1/2) < j),
    is at least ``level``. With too few values for that (n < 6 at 95 %) it is min and max,
    whose coverage is lower (94 % for 5 values, 75 % for 3)."""
    ordered = sorted(values)
    n = len(ordered)

    def coverage(j: int) -> float:
        return 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2**n

    j = 1
    while j + 1 <= (n + 1) // 2 and coverage(j + 1) >= level:
        j += 1
    return ordered[j - 1], ordered[n - j]


# -- CSVs -----------------------------------------------------------------------------------

def csv_name(row: dict[str, Any]) -> str:
    """File name from the settings, like timm's ``infer-amp-nhwc-pt240-cu124-rtx4090.csv``:
    ``<mode>-<precision>-<nhwc|nchw>-<compile>-<clock>-pt<torch>-<cu<cuda>|cpu>-<device>.csv``
    (rows on different clocks are different units: never one file)."""
    layout = "nhwc" if str(row["channels_last"]).lower() == "true" else "nchw"
    compiled = "eager" if row["compile"] in ("none", None) else f"compile_{row['compile']}"
    backend = f"cu{row['cuda']}" if str(row["device"]).startswith("cuda") else "cpu"
    parts = [row["mode"], row["precision"], layout, compiled, row["clock"], f"pt{row['torch']}",
             backend, row["device_name"]]
    return "-".join(_slug(str(p)) for p in parts) + ".csv"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "_", text.lower()).strip("_") or "unknown"


def append_rows(path: str | os.PathLike, rows: Sequence[dict[str, Any]],
                columns: Sequence[str] = COLUMNS) -> Path:
    """Append ``rows`` to the CSV at ``path`` (created with a header when new). A file with other
    columns (an older mvlab) is rewritten with the union of both, old rows kept."""
    path = Path(path)
    existing: list[dict[str, Any]] = []
    columns = list(columns)
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


def write_rows(path: str | os.PathLike, rows: Sequence[dict[str, Any]],
               columns: Sequence[str] = COLUMNS) -> Path:
    """Write ``rows`` as the whole CSV at ``path`` (replaced atomically)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns), restval="")
            writer.writeheader()
            writer.writerows(rows)
    return atomic_write(path, write)


def run_benchmarks(models: Iterable[str | nn.Module], modes: Sequence[str] = ("infer",),
                   out_dir: str | os.PathLike | None = None, progress: bool = False,
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
    head = ("model", "mode", "precision", "batch", "img", "params(M)", "GMACs", "clock",
            "img/s median", "q1-q3", "spread", "wall img/s")
    lines = [head]
    for r in rows:
        macs = r["macs"]
        ok = r["status"] == "ok"
        lines.append((
            str(r["model"])[:40], r["mode"], r["precision"], str(r["batch_size"]), str(r["img_size"]),
            f"{r['params'] / 1e6:.2f}" if isinstance(r["params"], int) else str(r["params"]),
            f"{macs / 1e9:.3f}" if isinstance(macs, int) else str(macs), r["clock"],
            f"{r['img_s_median']:.1f}" if ok else "OOM",
            f"{r['img_s_q1']:.1f}-{r['img_s_q3']:.1f}",
            f"{100 * r['spread']:.1f}%" if ok else "n/a",
            f"{r['wall_img_s_median']:.1f}",
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)

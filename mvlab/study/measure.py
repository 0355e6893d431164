"""The cheap measurements a trial makes before it trains: analytic complexity and throughput."""
from __future__ import annotations

import dataclasses
from typing import Any

from mvlab.study.schema import BenchSettings


def complexity_of(spec: str, img_size: int, num_classes: int = 1000) -> dict[str, float]:
    """``params``, ``macs`` (the paper's FLOPs convention: scan excluded) and ``macs_with_scan``
    of ``spec`` for one ``img_size`` image; analytic, no model is built."""
    from mvlab.models import complexity

    cost = complexity(spec, img_size=img_size, num_classes=num_classes)
    return {"params": float(cost.params), "macs": float(cost.macs),
            "macs_with_scan": float(cost.macs_with_scan)}


def num_classes_of(data_cfg: Any) -> int:
    """Classes a data config selects (lists folders only, decodes nothing)."""
    from mvlab.data import select_subset

    return len(select_subset(data_cfg).classes)


def throughput_of(spec: str, bench: BenchSettings, img_size: int, num_classes: int,
                  train_threads: int | None = None) -> dict[str, Any]:
    """Images/s of ``spec`` under ``bench`` (mvlab.bench: warm-up, then timed, synchronised
    steps). The returned row is the benchmark's CSV row (it carries the settings it was measured
    with) plus ``throughput`` (median img/s) and ``latency_ms`` (median time of one batch)."""
    from mvlab.bench import measure_throughput

    settings = dataclasses.asdict(bench)
    settings["img_size"] = img_size
    # Measure with the threads the trial trains with: on a shared CPU two threads can run
    # several times slower than one, so a bench on other settings ranks a different machine.
    if settings.get("threads") is None:
        settings["threads"] = train_threads
    row = dict(measure_throughput(spec, num_classes=num_classes, complexity=False, **settings))
    if row.get("status") != "ok":
        row["throughput"], row["latency_ms"] = float("nan"), float("nan")
        return row
    row["throughput"] = float(row["img_s_median"])
    row["latency_ms"] = float(row["step_ms_median"])
    return row


def warm_up(config: Any) -> None:
    """One throwaway measurement of the base model per process: the first model a process runs
    pays one-off costs (kernel selection, allocator growth, lazy imports) that would otherwise
    be charged to the first trial's throughput."""
    bench = dataclasses.replace(config.bench, warmup=1, steps=1, repeats=1)
    try:
        throughput_of(config.model, bench, config.bench.img_size or config.data.resolution, 10,
                      train_threads=config.train.threads)
    except Exception:  # noqa: BLE001 - a warm-up failure shows up again in the trial itself
        pass

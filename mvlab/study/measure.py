"""The cheap measurements a trial makes before it trains: analytic complexity and throughput."""
from __future__ import annotations

import dataclasses
from typing import Any

from mvlab import records
from mvlab.study.cost import complexity_of, num_classes_of
from mvlab.study.types import BenchSettings

__all__ = ["complexity_of", "num_classes_of", "throughput_of", "bench_settings", "study_columns",
           "study_configurations", "study_throughput", "warm_up", "STUDY_COLUMNS"]


def throughput_of(spec: str, bench: BenchSettings, img_size: int, num_classes: int,
                  train_threads: int | None = None) -> dict[str, Any]:
    """Images/s of ``spec`` under ``bench`` (mvlab.training.bench: warm-up, then timed, synchronised
    steps; on a CPU in CPU time, see ``mvlab.training.bench.resolve_clock``). The returned row is the
    benchmark's CSV row (it carries the settings and the clock it was measured with) plus
    ``throughput`` (median img/s) and ``latency_ms`` (median time of one batch)."""
    from mvlab.training.bench import measure_throughput

    settings = bench_settings(bench, img_size, train_threads)
    row = dict(measure_throughput(spec, num_classes=num_classes, complexity=False, **settings))
    if row.get("status") != "ok":
        row[records.THROUGHPUT], row[records.LATENCY_MS] = float("nan"), float("nan")
        return row
    row[records.THROUGHPUT] = float(row["img_s_median"])
    row[records.LATENCY_MS] = float(row["step_ms_median"])
    return row


def bench_settings(bench: BenchSettings, img_size: int, train_threads: int | None
                   ) -> dict[str, Any]:
    """``mvlab.training.bench`` keywords for a study's ``bench:`` section."""
    settings = dataclasses.asdict(bench)
    settings["img_size"] = img_size
    # Measure with the threads the trial trains with: on a shared CPU two threads can run
    # several times slower than one, so a bench on other settings ranks a different machine.
    # Without either setting, one thread: its CPU time is the clock that other jobs on the
    # machine disturb least.
    if settings.get("threads") is None:
        settings["threads"] = train_threads or 1
    return settings


# Columns of ``mvlab bench study``'s CSV: the configuration and its throughput first, then every
# column of mvlab.training.bench's rows (settings, clock, quartiles, wall time, the rounds' values).
STUDY_COLUMNS = (records.SPEC, records.THROUGHPUT, "img_s_ci_low", "img_s_ci_high", "clock",
                 "spread", "spread_range", "device", "device_name", "threads", "points", "study")


def study_columns() -> tuple[str, ...]:
    from mvlab.training.bench import COLUMNS

    return STUDY_COLUMNS + tuple(c for c in COLUMNS if c not in STUDY_COLUMNS)


def study_configurations(config: Any) -> dict[str, list[str]]:
    """The distinct canonical specs a grid or population study trains (its planned points,
    duplicates already collapsed, seeds merged), in plan order, each with the labels of the
    points that build it (seeds left out)."""
    from mvlab.errors import StudyError
    from mvlab.study.space import planned_points, resolve_point

    points = planned_points(config)
    if points is None:
        raise StudyError(f"{config.source}: study {config.name!r} is an optimize study: its "
                         f"configurations are chosen while it runs; benchmark a grid or "
                         f"population study, or name the models (mvlab bench MODEL ...)")
    configurations: dict[str, list[str]] = {}
    for point in points:
        label = records.point_label(point, skip=(records.SEED_PARAM,))
        labels = configurations.setdefault(resolve_point(config, point).spec, [])
        if label not in labels:
            labels.append(label)
    return configurations


# Many short rounds rather than a few long ones: a change of load then falls on every
# configuration alike. On the loaded 2-core machine (results/throughput/), hybrid_patterns'
# Kendall tau between two passes was 0.72 with 25 rounds of 2 steps against 0.39 with 5 rounds
# of 10 (the same 50 steps a configuration) and 0.31 with 5 rounds of 5; 50 rounds narrow each
# median's 95 % interval to about +-3.6 % (+-5.0 % with 25) for about a minute of CPU time.
STUDY_ROUNDS, STUDY_STEPS = 50, 2


def study_throughput(config: Any, rounds: int = STUDY_ROUNDS, steps: int = STUDY_STEPS,
                     on_round: Any = None, **overrides: Any) -> list[dict[str, Any]]:
    """Every distinct configuration of ``config`` measured interleaved over ``rounds`` of
    ``steps`` steps each, with the study's other ``bench:`` settings (batch, size, precision,
    warm-up, threads, clock; ``overrides``: ``mvlab.training.bench`` keywords replacing them). One row
    per configuration with ``STUDY_COLUMNS`` first; ``throughput`` is the median img/s over the
    rounds on the row's ``clock``."""
    from mvlab.training.bench import measure_interleaved

    configurations = study_configurations(config)
    settings = bench_settings(config.bench, config.bench.img_size or config.data.resolution,
                              config.train.threads)
    settings.pop("repeats")
    settings.update(overrides, steps=steps)
    rows = measure_interleaved(list(configurations), rounds=rounds,
                               num_classes=num_classes_of(config.data), complexity=False,
                               on_round=on_round, **settings)
    columns = study_columns()
    out = []
    for row, (spec, labels) in zip(rows, configurations.items(), strict=True):
        extra = {records.SPEC: spec, "points": "; ".join(labels), "study": config.name,
                 records.THROUGHPUT: row["img_s_median"] if row["status"] == "ok"
                 else float("nan")}
        out.append({c: {**row, **extra}.get(c, "n/a") for c in columns})
    return out


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

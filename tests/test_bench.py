"""Throughput rows, their clocks and CSVs, interleaved rounds, and the ``mvlab bench`` command
(CPU, tiny inputs)."""
from __future__ import annotations

import csv
import hashlib
import re
import sys
import threading
import time
import types
import typing

import numpy as np
import pytest
import timm
import torch
from scipy.stats import binom
from study_texts import TINY_GRID
from torch import nn

from mvlab.cli import main
from mvlab.commands.bench import describe_environment
from mvlab.config_fields import field_types
from mvlab.errors import UserError
from mvlab.models import build_model, complexity
from mvlab.study import load_study
from mvlab.study.measure import STUDY_COLUMNS, STUDY_ROUNDS, study_columns, throughput_of
from mvlab.study.schema import BenchSettings
from mvlab.study.space import planned_points, resolve_point
from mvlab.training.bench import (
    CLOCKS,
    COLUMNS,
    append_rows,
    csv_name,
    measure_interleaved,
    measure_throughput,
    median_ci,
    resolve_clock,
    run_benchmarks,
)
from mvlab.training.runtime import device_name

QUICK = dict(img_size=32, device="cpu", warmup=1, steps=2, repeats=3)


pytestmark = pytest.mark.usefixtures("one_thread")


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_carry_every_setting_and_append_to_a_csv_named_by_them(tmp_path):
    rows = run_benchmarks(["tiny"], modes=("infer", "train"), out_dir=tmp_path, batch_size=4,
                          num_classes=10, **QUICK)

    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].startswith("infer-fp32-nhwc-eager-thread_cpu-pt")
    assert names[1].startswith("train-fp32-nhwc-eager-thread_cpu-pt") and "-cpu-" in names[0]
    expected = complexity("tiny", img_size=32, num_classes=10)
    for row in rows:
        stored = read_csv(tmp_path / csv_name(row))
        assert len(stored) == 1 and list(stored[0]) == list(COLUMNS)
        empty = [k for k, v in stored[0].items() if v in ("", "None", "nan")]
        assert not empty, f"unfilled columns: {empty}"
        assert row["status"] == "ok" and row["device"] == "cpu" and row["precision"] == "fp32"
        assert row["channels_last"] is True and row["compile"] == "none"
        assert (row["batch_size"], row["requested_batch_size"], row["img_size"]) == (4, 4, 32)
        assert row["scan_backend"] not in ("auto", "n/a") and row["torch"] in torch.__version__
        assert (row["params"], row["macs"], row["macs_with_scan"]) == (
            expected.params, expected.macs, expected.macs_with_scan)
        assert row["spec"].startswith("stem=")
        assert 0 < row["img_s_min"] <= row["img_s_q1"] <= row["img_s_median"] <= row["img_s_q3"] \
            <= row["img_s_max"]
        assert row["clock"] == "thread_cpu" and row["schedule"] == "consecutive"
        # three repeats are too few for a 95 % interval of the median: min and max
        assert (row["img_s_ci_low"], row["img_s_ci_high"]) == (row["img_s_min"], row["img_s_max"])
        repeats = [float(v) for v in row["img_s_repeats"].split(";")]
        assert len(repeats) == 3 and min(repeats) == pytest.approx(row["img_s_min"], abs=0.01)
        assert row["spread"] == pytest.approx(
            (row["img_s_q3"] - row["img_s_q1"]) / row["img_s_median"], abs=1e-3)
        assert len(row["wall_img_s_repeats"].split(";")) == 3 and row["wall_img_s_median"] > 0

    run_benchmarks(["tiny"], modes=("infer",), out_dir=tmp_path, batch_size=2, num_classes=10, **QUICK)
    assert [r["batch_size"] for r in read_csv(tmp_path / names[0])] == ["4", "2"]
    row = measure_throughput("tiny", batch_size=2, num_classes=10, channels_last=False, threads=2,
                             **QUICK)
    assert row["channels_last"] is False and "-nchw-" in csv_name(row)
    assert row["threads"] == 2 and torch.get_num_threads() == 1  # restored after measuring
    assert row["clock"] == "process_cpu"  # the calling thread does only part of the work


def test_timm_models_are_measured_alongside_with_counted_macs():
    row = measure_throughput("resnet10t", batch_size=2, num_classes=10, **QUICK)
    assert row["model"] == "resnet10t" and row["spec"] == "n/a" and row["scan_backend"] == "n/a"
    assert row["macs_method"] == "flop_counter" and row["macs"] > 0
    reference = timm.create_model("resnet10t", num_classes=10)
    assert row["params"] == sum(p.numel() for p in reference.parameters())


class OutOfMemoryAbove(nn.Module):
    """A real tiny network that raises the allocator's error for batches above ``limit``."""

    def __init__(self, limit: int):
        super().__init__()
        self.net = build_model("tiny", num_classes=10)
        self.limit = limit

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return self.net(x)


def test_out_of_memory_retries_at_half_the_batch():
    row = measure_throughput(OutOfMemoryAbove(limit=3), batch_size=16, num_classes=10,
                             complexity=False, **QUICK)
    assert row["status"] == "ok" and (row["requested_batch_size"], row["batch_size"]) == (16, 2)

    row = measure_throughput(OutOfMemoryAbove(limit=0), mode="train", batch_size=2,
                             num_classes=10, complexity=False, **QUICK)
    assert row["status"] == "oom" and row["batch_size"] == 1 and row["img_s_median"] == 0.0


def test_csv_with_older_columns_is_rewritten_with_their_union(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("model,img_s_median,legacy\nold_model,10.0,x\n")
    row = {key: "v" for key in COLUMNS}
    append_rows(path, [row])
    stored = read_csv(path)
    assert [r["model"] for r in stored] == ["old_model", "v"]
    assert stored[0]["legacy"] == "x" and stored[1]["legacy"] == "" and stored[1]["scan_backend"] == "v"


def test_cli_bench_prints_a_table_and_hands_scan_to_the_scan_benchmark(tmp_path, capsys,
                                                                       monkeypatch):
    code = main(["bench", "tiny", "--img-size", "32", "--device", "cpu", "-b", "2", "--warmup",
                 "0", "--steps", "1", "--repeats", "1", "--num-classes", "10", "--out",
                 str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "img/s median" in out and "appended to" in out
    assert len(list(tmp_path.glob("infer-*.csv"))) == 1

    received = []
    fake = types.ModuleType("mvlab.ops.scan.bench")
    fake.main = lambda argv: received.append(argv) or 0
    monkeypatch.setitem(sys.modules, "mvlab.ops.scan.bench", fake)
    assert main(["bench", "scan", "--length", "64"]) == 0
    assert received == [["--length", "64"]]

    assert main(["bench", "no_such_model_anywhere", "--device", "cpu", "--no-save"]) == 2
    assert "neither an mvlab preset" in capsys.readouterr().err


# -- clocks ---------------------------------------------------------------------------------

def test_clock_resolves_by_device_and_threads():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_clock("auto", cpu, 1) == "thread_cpu"
    assert resolve_clock("auto", cpu, 2) == "process_cpu"
    assert resolve_clock("auto", gpu, 1) == "wall" and resolve_clock("wall", cpu, 1) == "wall"
    for clock, device, threads, words in (("thread_cpu", cpu, 2, "threads=1"),
                                          ("thread_cpu", gpu, 1, "clock=wall"),
                                          ("sundial", cpu, 1, "use one of")):
        with pytest.raises(UserError, match=words):
            resolve_clock(clock, device, threads)
    # a study file accepts exactly the clocks the benchmark knows
    assert typing.get_args(field_types(BenchSettings)["clock"]) == CLOCKS


@pytest.mark.parametrize("n", [3, 5, 6, 11, 20, 50])
def test_median_interval_is_the_widest_order_statistics_pair_that_covers_95_percent(n):
    values = [float(v) for v in np.random.default_rng(n).permutation(n)]
    low, high = median_ci(values)
    j = int(low) + 1  # values are 0..n-1, so x(j) = j - 1
    assert high == n - j  # symmetric ranks: x(n + 1 - j)

    def coverage(k):  # P(x(k) <= median <= x(n + 1 - k)) for a continuous distribution
        return 1 - 2 * binom.cdf(k - 1, n, 0.5)

    if n >= 6:
        assert coverage(j) >= 0.95 and coverage(j + 1) < 0.95
    else:
        assert (low, high) == (0.0, n - 1.0)


class _Burner:
    """Threads that burn CPU in this process outside the GIL (hashing a large buffer)."""

    def __init__(self, n: int):
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._burn, daemon=True) for _ in range(n)]

    def _burn(self) -> None:
        block = bytes(1 << 20)
        while not self.stop.is_set():
            hashlib.sha256(block).digest()

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join()


class Descheduled(nn.Module):
    """A tiny network whose forward also spends 20 ms off the CPU, as a thread does while the
    scheduler runs other jobs on its core."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, 10))

    def forward(self, x):
        time.sleep(0.02)
        return self.net(x)


def test_thread_clock_counts_only_the_measuring_threads_own_cpu_time():
    # Time off the CPU (the sleep) and CPU time burnt by other threads of the process are both
    # invisible to the thread clock; wall time sees the first, the process clock the second.
    # The margins are tens of times, not percent, so a loaded machine cannot flip them.
    settings = dict(QUICK, steps=5, batch_size=4, num_classes=10, complexity=False)
    model = Descheduled()
    with _Burner(1):
        thread = measure_throughput(model, **settings)
        process = measure_throughput(model, clock="process_cpu", **settings)
    assert thread["clock"] == "thread_cpu" and process["clock"] == "process_cpu"
    assert thread["wall_img_s_median"] < thread["img_s_median"] / 5
    assert process["img_s_median"] < thread["img_s_median"] / 3


class Recorded(nn.Module):
    """A small real network that logs its name on every forward."""

    def __init__(self, name: str, log: list[str]):
        super().__init__()
        self.name, self.log = name, log
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, 10))

    def forward(self, x):
        self.log.append(self.name)
        return self.net(x)


def test_interleaved_rounds_visit_every_model_in_order():
    log: list[str] = []
    models = [Recorded(name, log) for name in "ABC"]
    rounds_seen = []
    rows = measure_interleaved(models, rounds=3, batch_size=2, warmup=1, steps=2, num_classes=10,
                               img_size=16, device="cpu", complexity=False,
                               on_round=lambda done, total: rounds_seen.append((done, len(log))))
    warm = ["A", "B", "C"]
    one_round = ["A", "A", "B", "B", "C", "C"]
    assert log == warm + one_round * 3
    assert rounds_seen == [(1, 9), (2, 15), (3, 21)]
    assert [r["model"] for r in rows] == ["Recorded"] * 3
    for row in rows:
        assert row["schedule"] == "interleaved:3" and row["repeats"] == 3 and row["status"] == "ok"
        assert len(row["img_s_repeats"].split(";")) == 3 and row["clock"] == "thread_cpu"


class RecordedUpTo(Recorded):
    """``Recorded`` that raises the allocator's error for batches above ``limit``."""

    def __init__(self, name: str, log: list[str], limit: int):
        super().__init__(name, log)
        self.limit = limit

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return super().forward(x)


def test_a_model_that_fits_no_batch_drops_out_of_the_rounds():
    log: list[str] = []
    rows = measure_interleaved([RecordedUpTo("A", log, 0), RecordedUpTo("B", log, 3)], rounds=2,
                               batch_size=8, warmup=1, steps=1, img_size=16, device="cpu",
                               num_classes=10, complexity=False)
    assert [r["status"] for r in rows] == ["oom", "ok"]
    assert [r["batch_size"] for r in rows] == [1, 2]
    assert log == ["B", "B", "B"]  # A never ran a step; B: warm-up, then one step a round


def test_sweep_throughput_uses_the_cpu_clock_with_one_thread_by_default():
    bench = BenchSettings(batch_size=2, warmup=1, steps=2, repeats=2)
    row = throughput_of("tiny", bench, img_size=32, num_classes=10)
    assert (row["clock"], row["threads"], row["device"]) == ("thread_cpu", 1, "cpu")
    assert row["throughput"] == row["img_s_median"] > 0
    bench = BenchSettings(batch_size=2, warmup=0, steps=1, repeats=1)
    row = throughput_of("tiny", bench, img_size=32, num_classes=10, train_threads=2)
    assert (row["clock"], row["threads"]) == ("process_cpu", 2)


# -- the study command and device naming ---------------------------------------------------

STUDY = TINY_GRID.replace("name: t\n", "name: benchy\n") + """\
bench:
  batch_size: 2
  warmup: 1
  steps: 2
"""


def test_bench_study_writes_one_row_per_distinct_network(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.replace("name: benchy", f"name: benchy\nworkdir: {tmp_path}/w"))
    assert main(["bench", "study", str(study), "--rounds", "2", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "w" / "throughput.csv"
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        header = list(reader.fieldnames)
    assert header == list(study_columns()) and header[:len(STUDY_COLUMNS)] == list(STUDY_COLUMNS)
    config = load_study(study)
    planned = [resolve_point(config, p) for p in planned_points(config)]
    expected = {plan.spec for plan in planned}
    # one row per network the study trains: the two seeds are one configuration
    assert len(rows) == len(expected) >= 3 and {r["spec"] for r in rows} == expected
    for row in rows:
        labels = {plan.label.rsplit(" seed=", 1)[0] for plan in planned if plan.spec == row["spec"]}
        assert set(row["points"].split("; ")) == labels
    for row in rows:
        assert row["clock"] == "thread_cpu" and row["device"] == "cpu" and row["threads"] == "1"
        assert row["study"] == "benchy" and row["schedule"] == "interleaved:3"
        assert float(row["throughput"]) == float(row["img_s_median"]) > 0
        assert len(row["img_s_repeats"].split(";")) == 2 and float(row["spread"]) >= 0
        assert (row["batch_size"], row["img_size"], row["steps"]) == ("2", "16", "1")
    assert "round 2/2" in out and f"wrote {path}" in out

    with pytest.raises(SystemExit):
        main(["bench", "study", "--help"])
    assert f"(default: {STUDY_ROUNDS})" in " ".join(capsys.readouterr().out.split())


def test_bench_names_the_device_not_the_torch_build(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["bench", "tiny", "--img-size", "32", "--device", "cpu", "-b", "2", "--warmup",
                 "0", "--steps", "1", "--repeats", "1", "--num-classes", "10"])
    assert code == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("device:")][0]
    assert line.startswith(f"device: {device_name(torch.device('cpu'))} (cpu, 1 threads)")
    assert "cuda" not in line and "clock=thread_cpu" in line
    # the default output is the user's ./bench, never the checkout's results/
    stored = read_csv(next((tmp_path / "bench").glob("infer-*.csv")))
    assert stored[0]["cuda"] == "n/a" and stored[0]["device_name"] != "cpu"

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert device_name(torch.device("cuda", 0)) == "NVIDIA H200"
    gpu_row = dict(stored[0], device="cuda:0", device_name="NVIDIA H200", cuda="13.0",
                   clock="wall")
    assert describe_environment(gpu_row).startswith("device: NVIDIA H200 (cuda:0)  torch ")
    assert "cuda 13.0" in describe_environment(gpu_row)


def test_settings_past_the_study_limits_fail_before_a_model_is_built(monkeypatch):
    import mvlab.training.bench as bench_module

    monkeypatch.setattr(bench_module._Bench, "build", lambda *a, **k: pytest.fail("built"))
    for kwargs, says in (({"batch_size": 10**9}, "bench batch_size=1000000000: must be in 1..65,536"),
                         ({"img_size": 100_000}, "bench img_size=100000: must be in 8..4096"),
                         ({"steps": 10**9}, "bench steps=1000000000: must be in 1..100,000"),
                         ({"num_classes": -5}, "bench num_classes=-5: must be in 0..1,000,000"),
                         ({"threads": 0}, "bench threads=0: must be in 1..4,096"),
                         ({"mode": "train", "num_classes": 0}, "needs a classifier head")):
        with pytest.raises(UserError, match=re.escape(says)):
            measure_throughput("tiny", device="cpu", **{"img_size": 16, **kwargs})
    with pytest.raises(UserError, match="bench steps=1000000000"):
        measure_interleaved(["tiny"], device="cpu", steps=10**9)

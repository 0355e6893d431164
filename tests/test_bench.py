"""Throughput rows, their CSVs and the ``mvlab bench`` command (CPU, tiny inputs)."""
from __future__ import annotations

import csv
import sys
import types

import pytest
import timm
import torch
from torch import nn

from mvlab.bench import COLUMNS, append_rows, csv_name, measure_throughput, run_benchmarks
from mvlab.cli import main
from mvlab.models import build_model, complexity

QUICK = dict(img_size=32, device="cpu", warmup=1, steps=2, repeats=3)


pytestmark = pytest.mark.usefixtures("one_thread")


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_carry_every_setting_and_append_to_a_csv_named_by_them(tmp_path):
    rows = run_benchmarks(["tiny"], modes=("infer", "train"), out_dir=tmp_path, batch_size=4,
                          num_classes=10, **QUICK)

    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].startswith("infer-fp32-nhwc-eager-pt")
    assert names[1].startswith("train-fp32-nhwc-eager-pt") and "-cpu-" in names[0]
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

    run_benchmarks(["tiny"], modes=("infer",), out_dir=tmp_path, batch_size=2, num_classes=10, **QUICK)
    assert [r["batch_size"] for r in read_csv(tmp_path / names[0])] == ["4", "2"]
    row = measure_throughput("tiny", batch_size=2, num_classes=10, channels_last=False, threads=2,
                             **QUICK)
    assert row["channels_last"] is False and "-nchw-" in csv_name(row)
    assert row["threads"] == 2 and torch.get_num_threads() == 1  # restored after measuring


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

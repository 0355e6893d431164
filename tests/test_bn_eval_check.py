"""benchmarks/bn_eval_check.py: its two ways of scoring tell stale
BatchNorm statistics from a network that has not learned."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mvlab.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def check(import_script):
    return import_script("benchmarks/bn_eval_check.py")


def separable(n: int = 256, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two classes told apart by the sign of feature 0 around an offset of 5."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    y = (x[:, 0] > 0).long()
    x[:, 0] += 5.0
    return [(x[i:i + 64], y[i:i + 64]) for i in range(0, n, 64)]


def test_stale_statistics_score_at_chance_and_precise_ones_do_not(check):
    # A network that separates the classes once its input is centred, but whose running mean
    # was left at 0: in eval mode every image lands on one side (chance); recomputed statistics
    # (precise) recover it.
    data = separable()
    bn = nn.BatchNorm1d(2)
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-10.0, 0.0], [10.0, 0.0]]))
        head.bias.zero_()
    model = nn.Sequential(bn, head).eval()
    assert evaluate(model, data, torch.device("cpu"))["top1"] == pytest.approx(50, abs=10)
    precise = check.precise_copy(model, [x for x, _ in data])
    assert evaluate(precise, data, torch.device("cpu"))["top1"] > 95
    # the copies leave the scored network alone, and precise is the plain mean over batches
    assert float(bn.running_mean[0]) == 0.0 and bn.training is False
    means = torch.stack([x.mean(0) for x, _ in data]).mean(0)
    torch.testing.assert_close(precise[0].running_mean, means)


def test_smoke_run_writes_every_way(tmp_path):
    out = tmp_path / "bn.csv"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bn_eval_check.py"),
                    str(ROOT / "experiments" / "quickstart.yaml"), "--set", "pattern=last_half",
                    "--smoke", "--out", str(out)], check=True, capture_output=True, text=True,
                   cwd=tmp_path, timeout=600)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) >= 2 and [int(r["step"]) for r in rows] == sorted(
        int(r["step"]) for r in rows)
    for way in ("eval", "precise"):
        assert all(0 <= float(r[f"{way}_top1"]) <= 100 for r in rows)

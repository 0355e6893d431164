"""benchmarks/throughput_reliability.py's summary on passes with a known truth: a load factor
common to a round cancels when rounds are blocks, separated configurations are resolved and keep
their order, and close ones are not claimed."""
import json
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reliability(import_script):
    return import_script("benchmarks/throughput_reliability.py")


TRUTH = {"a": 1000.0, "b": 800.0, "c": 600.0, "c_twin": 600.0}


def passes(seed: int, rounds: int = 40, noise: float = 0.0) -> list[dict]:
    """Rows as `mvlab bench study` writes them: every round slowed by a load factor shared by
    all configurations (0.5-1.0), plus optional noise of each configuration's own."""
    rng = random.Random(seed)
    loads = [rng.uniform(0.5, 1.0) for _ in range(rounds)]
    rows = []
    for name, rate in TRUTH.items():
        rates = [rate * load * (1 + rng.gauss(0, noise)) for load in loads]
        ordered = sorted(rates)
        rows.append({"points": name, "spec": name, "study": "toy", "repeats": rounds, "steps": 2,
                     "batch_size": 32, "img_size": 48, "threads": 1, "clock": "thread_cpu",
                     "device_name": "toy", "img_s_median": ordered[rounds // 2],
                     "wall_img_s_median": ordered[rounds // 2],
                     "img_s_repeats": ";".join(f"{v:.4f}" for v in rates),
                     "wall_img_s_repeats": ";".join(f"{v:.4f}" for v in rates)})
    return rows


def test_rounds_as_blocks_cancel_a_common_load(reliability):
    relative = reliability.blocked(passes(0))
    for name, series in zip(TRUTH, relative, strict=True):
        expected = TRUTH[name] / 700.0  # the median of the four configurations' rates
        assert max(series) - min(series) < 1e-6
        assert series[0] == pytest.approx(expected, rel=1e-6)


def test_summary_resolves_what_is_separated_and_only_that(reliability, tmp_path):
    first, second = passes(1, noise=0.02), passes(2, noise=0.02)
    context = {"loaders": 2, "load_avg": {}, "seconds": 0}
    reliability.summarise(first, second, context, tmp_path)
    result = json.loads((tmp_path / "summary.json").read_text())
    assert result["pairs"] == 12
    # a, b and c are 20-40 % apart: all four separated pairs in both passes; c and its twin
    # are the same speed and must not be claimed different in either pass.
    assert result["resolved_pairs"] == 10
    assert result["resolved_pairs_kept"] == result["resolved_pairs"]
    # The common load is the whole spread of the raw rounds and cancels when blocked.
    assert result["spread_median"] > 0.2
    assert result["blocked_spread_median"] < 0.05
    assert result["round_noise_sd"] == pytest.approx(0.02, rel=0.5)
    assert set(result["p_goal_at_rounds"]) == {"50", "200", "800", "3200"}

"""Study statistics against known truths: verdicts, Holm, Page's L, reliability, fidelity CIs,
the Pareto front's CI marks."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mvlab.analysis import (
    AnalysisError,
    compare_to_reference,
    fidelity_table,
    front_within_ci,
    holm,
    noise_homogeneity,
    page_trend,
    seed_matrix,
    seed_means,
    split_half,
)
from mvlab.analysis.reliability import seeds_for, spearman_brown
from mvlab.analysis.synthetic import effects_table
from mvlab.analysis.verdicts import paired_tests

KNOWN = {"better": 2.0, "equal": 0.0, "unsure": 0.5}
SEEDS = {"reference": 30, "better": 8, "equal": 30, "unsure": 2}


def test_known_effects_get_their_verdicts():
    df = effects_table(KNOWN, seeds=SEEDS, noise_sd=0.4, seed=0)
    table = compare_to_reference(df, "heldout_top1", "reference").set_index("config")
    assert table.loc["better", "verdict"] == "better"
    assert table.loc["equal", "verdict"] == "equivalent"
    assert table.loc["unsure", "verdict"] == "undetermined"  # 2 seeds cannot tell 0.5 from 0
    assert table.loc["unsure", "seeds"] == 2 and table.loc["better", "seeds"] == 8
    assert table.loc["better", "ci_low"] > 0  # the interval excludes no difference
    assert table.loc["unsure", "ci_low"] < 0 < table.loc["unsure", "ci_high"]
    # more seeds resolve the margin: the unsure comparison's need is above what it has
    assert table.loc["unsure", "mde"] > 0.5 and table.loc["unsure", "seeds_for_margin"] > 2
    assert table.attrs["comparisons"] == 3 and table.attrs["ci_level"] == pytest.approx(
        1 - 0.05 / 3)


def test_worse_is_the_mirror_of_better_and_minimised_metrics_flip():
    df = effects_table({"worse": -2.0, "other": 0.0}, seeds=8, noise_sd=0.2, seed=1)
    table = compare_to_reference(df, "heldout_top1", "reference").set_index("config")
    assert table.loc["worse", "verdict"] == "worse"
    flipped = compare_to_reference(df, "heldout_top1", "reference", higher_is_better=False)
    assert flipped.set_index("config").loc["worse", "verdict"] == "better"


def test_pairing_over_seeds_removes_the_seed_block_effect():
    # A big shared seed effect (sd 5) and a small true difference (1 point, noise 0.1): paired
    # over seeds it is plain; the unpaired spread of each configuration hides it.
    df = effects_table({"b": 1.0}, seeds=6, seed_sd=5.0, noise_sd=0.1, seed=2)
    table = compare_to_reference(df, "heldout_top1", "reference").set_index("config")
    assert table.loc["b", "verdict"] == "better"
    unpaired = stats.ttest_ind(df.loc[df.config == "b", "heldout_top1"],
                               df.loc[df.config == "reference", "heldout_top1"])
    assert unpaired.pvalue > 0.3


def test_per_comparison_sd_gives_no_verdict_for_two_equal_differences():
    # Two seeds whose differences happen to be equal (a 600-image split quantises accuracy):
    # a zero sd estimates no noise, so nothing is shown; pooled, the other comparisons' noise
    # is used.
    df = pd.DataFrame({"config": ["r", "r", "a", "a", "b", "b"], "seed": [0, 1] * 3,
                       "acc": [70.0, 71.0, 69.5, 70.5, 70.0, 72.0]})
    own = compare_to_reference(df, "acc", "r").set_index("config")
    assert own.loc["a", "verdict"] == "undetermined" and math.isnan(own.loc["a", "p_diff"])
    pooled = compare_to_reference(df, "acc", "r", pooled=True).set_index("config")
    # the 3 x 2 table's two-way residuals are +-1/6 (r, a) and -+1/3 (b): SS 1/3 on
    # (3 - 1)(2 - 1) = 2 dof, sigma^2 1/6, the sd of a difference sqrt(2/6)
    assert pooled.loc["a", "dof"] == 2 and pooled.loc["a", "sd"] == pytest.approx(3 ** -0.5)
    assert math.isfinite(pooled.loc["a", "p_diff"])


def test_paired_tests_match_scipy():
    diffs = np.array([0.3, -0.1, 0.5, 0.2, 0.4])
    tests = paired_tests(diffs, margin=0.5)
    assert tests["p_diff"] == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue)
    lower = stats.ttest_1samp(diffs, -0.5, alternative="greater").pvalue
    upper = stats.ttest_1samp(diffs, 0.5, alternative="less").pvalue
    assert tests["p_equiv"] == pytest.approx(max(lower, upper))


def test_holm_by_hand():
    adjusted = holm([0.01, 0.04, 0.03, np.nan])
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1, made monotone: 0.03, 0.06, 0.06
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adjusted[3])


def test_page_trend_finds_the_predicted_order_and_not_its_reverse():
    df = effects_table({"a": 0.5, "b": 1.0, "c": 1.5}, seeds=5, noise_sd=0.2, seed=3)
    order = ["reference", "a", "b", "c"]
    assert page_trend(df, "heldout_top1", order)["p"] < 0.01
    assert page_trend(df, "heldout_top1", order[::-1])["p"] > 0.9
    with pytest.raises(AnalysisError, match="at least 3"):
        page_trend(df, "heldout_top1", order[:2])


def _matrix(means: np.ndarray, spread: float, seeds: int = 4) -> pd.DataFrame:
    # Seeds deviate from each configuration's mean by +-spread, summing to zero, so every
    # configuration's mean is exactly ``means`` whatever the spread.
    rng = np.random.default_rng(0)
    pattern = np.array([1.0, -1.0] * (seeds // 2))
    rows = [m + spread * rng.permutation(pattern) for m in means]
    return pd.DataFrame(rows, index=[f"c{i}" for i in range(len(means))])


def test_split_half_reliability_and_its_interval_see_seed_noise():
    means = np.linspace(70, 75, 12)
    quiet = split_half(_matrix(means, 0.01), n_boot=400)
    noisy = split_half(_matrix(means, 4.0), n_boot=400)
    assert quiet["r_half"] == pytest.approx(1.0) and quiet["reliable"]
    assert not noisy["reliable"] and noisy["r_full"] < 0.8
    # identical configuration means, so an interval that resampled configurations only would
    # be the same for both; seeds resampled within configurations widen the noisy one
    assert (noisy["r_half_high"] - noisy["r_half_low"]) > 2 * (
        quiet["r_half_high"] - quiet["r_half_low"])
    assert noisy["seeds_needed"] > 4 or math.isinf(noisy["seeds_needed"])


def test_spearman_brown_and_the_seeds_a_ranking_needs():
    assert spearman_brown(0.5, 2) == pytest.approx(2 / 3)
    assert spearman_brown(-0.2, 2) == -0.2  # no projection of a non-positive correlation
    # one seed per half at r 0.5: one seed is 0.5 reliable; 0.8 needs 0.8*0.5/(0.5*0.2) = 4
    assert seeds_for(0.5, 1, 0.8) == 4
    assert math.isinf(seeds_for(-0.1, 1, 0.8))


def test_split_half_needs_seeds_and_configurations():
    with pytest.raises(AnalysisError, match="2 seeds"):
        split_half(pd.DataFrame({0: [1.0, 2.0, 3.0]}))


def _fidelity_long(spread: float) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = []
    for i in range(10):
        for label, mean in (("e1", 60 + i), ("e4", 70 + i + rng.normal(0, 1))):
            for s, sign in enumerate((1, -1, 1, -1)):
                rows.append({"spec": f"c{i}", "fidelity": label, "seed": s,
                             "acc": mean + sign * spread * (1 if s < 2 else 0.5),
                             "params": 1000 - 10 * i})
    return pd.DataFrame(rows)


def test_fidelity_intervals_resample_seeds_and_baselines_take_their_better_direction():
    quiet = fidelity_table(_fidelity_long(0.01), "acc", "e1", "e4", baselines=("params",),
                           n_boot=400)
    noisy = fidelity_table(_fidelity_long(6.0), "acc", "e1", "e4", baselines=("params",),
                           n_boot=400)
    # the same seed means at both settings: only seed noise separates the two intervals
    assert quiet.loc["e1", "kendall_tau"] == pytest.approx(noisy.loc["e1", "kendall_tau"])
    width = lambda t: t.loc["e1", "kendall_tau_high"] - t.loc["e1", "kendall_tau_low"]  # noqa
    assert width(noisy) > 2 * width(quiet)
    # params fall as accuracy rises: a strong ranker, read as "smaller is better"
    assert noisy.loc["params", "direction"] == "smaller"
    assert noisy.loc["params", "kendall_tau"] > 0.5


def test_front_within_ci_marks_a_lead_smaller_than_the_noise():
    runs = pd.DataFrame({"config": ["fast", "fast", "acc", "acc", "far", "far"],
                         "seed": [0, 1] * 3,
                         "top1": [70.0, 70.4, 70.2, 70.6, 80.0, 80.4],
                         "thr": [900, 900, 500, 500, 100, 100]})
    means = seed_means(runs, ["top1", "thr"], config="config", pooled=True)
    goals = {"top1": "maximize", "thr": "maximize"}
    marked = dict(zip(means["config"], front_within_ci(means, goals, "top1"), strict=True))
    # "acc" leads "fast" (faster) by 0.2 points, inside the CI; "far" leads by 10
    assert marked == {"fast": False, "acc": True, "far": False}


def test_seed_matrix_averages_duplicate_points_of_one_seed():
    df = pd.DataFrame({"config": ["a", "a", "a"], "seed": [0, 0, 1], "acc": [1.0, 3.0, 5.0]})
    assert seed_matrix(df, "acc").loc["a"].tolist() == [2.0, 5.0]


def test_pairs_sharing_a_configuration_do_not_count_its_noise_twice():
    # three controls over 3 configurations x 4 seeds: 6 residual dof, not 3 x 3 = 9
    from mvlab.analysis.verdicts import block_noise, compare_pairs

    df = effects_table({"a": 2.0, "b": -1.0}, seeds=4, noise_sd=0.5, seed=4)
    pairs = [("a", "reference"), ("b", "reference"), ("a", "b")]
    table = compare_pairs(df, "heldout_top1", pairs, pooled=True)
    assert (table["dof"] == 6).all()
    matrix = seed_matrix(df, "heldout_top1")
    sd, dof = block_noise(matrix)
    assert dof == 6 and table["sd"].iloc[0] == pytest.approx(sd)
    # the residual of an additive table (configuration + seed, no noise) is zero
    additive = matrix.mean(axis=1).to_numpy()[:, None] + np.arange(4)[None, :]
    assert block_noise(pd.DataFrame(additive))[0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(AnalysisError, match="with itself"):
        compare_pairs(df, "heldout_top1", [("a", "a")])


def unequal_noise_table(seed: int = 5) -> pd.DataFrame:
    """steady: 1.5 points above the reference, run noise 0.2; noisy: no true difference, with an
    extra run noise of sd 12 of its own (a network that sometimes stays on the plateau)."""
    df = effects_table({"steady": 1.5, "noisy": 0.0}, seeds=8, noise_sd=0.2, seed=seed)
    rng = np.random.default_rng(seed + 1)  # not effects_table's stream: independent noise
    noisy = df["config"] == "noisy"
    df.loc[noisy, "heldout_top1"] += rng.normal(0.0, 12.0, size=int(noisy.sum()))
    return df


def test_each_comparison_is_judged_by_its_own_noise():
    # (in 300 draws of this table the steady verdicts below held every time)
    df = unequal_noise_table()
    own = compare_to_reference(df, "heldout_top1", "reference").set_index("config")
    pooled = compare_to_reference(df, "heldout_top1", "reference", pooled=True
                                  ).set_index("config")
    # its own differences show the steady gain; one pooled level lets the noisy network's
    # spread hide it
    assert own.loc["steady", "verdict"] == "better" and own.loc["steady", "dof"] == 7
    assert pooled.loc["steady", "verdict"] == "undetermined"
    assert own.loc["steady", "sd"] < 1 < pooled.loc["steady", "sd"]
    # and the noisy network's own spread is wider than the pooled level says
    assert own.loc["noisy", "ci_high"] - own.loc["noisy", "ci_low"] > (
        pooled.loc["noisy", "ci_high"] - pooled.loc["noisy", "ci_low"])


def test_noise_homogeneity_tells_unequal_from_equal_spread():
    table = unequal_noise_table()
    unequal = noise_homogeneity(seed_matrix(table, "heldout_top1"))
    assert unequal["p"] < 0.05 and unequal["config_max"] == "noisy"
    assert unequal["sd_max"] > 5 * unequal["sd_min"] and unequal["configs"] == 3
    # the pairs: steady vs reference differ by run noise alone; either vs noisy by its spread;
    # the pooled level lies between
    own = compare_to_reference(table, "heldout_top1", "reference").set_index("config")
    assert unequal["pairs"] == 3
    assert unequal["pair_sd_min"] == pytest.approx(own.loc["steady", "sd"])
    assert unequal["pair_sd_min"] < unequal["pooled_pair_sd"] < unequal["pair_sd_max"]
    equal = effects_table({"a": 1.0, "b": 0.0}, seeds=8, seed_sd=0.0, noise_sd=1.0, seed=6)
    assert noise_homogeneity(seed_matrix(equal, "heldout_top1"))["p"] > 0.05
    # fewer than 4 seeds: spreads are given, the screen is not run
    few = noise_homogeneity(seed_matrix(table.query("seed < 3"), "heldout_top1"))
    assert math.isnan(few["p"]) and few["configs"] == 0 and few["pairs"] == 3
    # a configuration missing seeds still counts with the seeds it ran
    gappy = noise_homogeneity(seed_matrix(table.drop(table.index[
        (table["config"] == "steady") & (table["seed"] >= 6)]), "heldout_top1"))
    assert gappy["configs"] == 3 and gappy["pairs"] == 3
    flat = pd.DataFrame({"config": ["r", "a"] * 4, "seed": [0, 0, 1, 1, 2, 2, 3, 3],
                         "heldout_top1": [70.0] * 8})
    assert math.isnan(noise_homogeneity(seed_matrix(flat, "heldout_top1"))["p"])

"""mvlab.analysis on small tables whose answers were worked out by hand."""
from __future__ import annotations

import ast
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mvlab.analysis
from mvlab.analysis import (
    AnalysisError,
    bootstrap_range,
    bootstrap_table,
    bootstrap_win_share,
    choice_summary,
    complexity_bins,
    complexity_weights,
    edf,
    edf_table,
    fidelity_table,
    knob_label,
    paired_fidelities,
    pareto_front,
    pareto_mask,
    pareto_ranks,
    pareto_table,
    rank_agreement,
    rank_agreement_ci,
    seed_noise,
    seed_spread,
    spec_fields,
    top_k_overlap,
)
from mvlab.analysis.fidelity import kendall_tau_b_rows, spearman_rho_rows, top_k_overlap_rows
from mvlab.errors import UserError

MAX_BOTH = {"acc": "maximize", "thr": "maximize"}


@pytest.fixture
def points() -> pd.DataFrame:
    # A and D are duplicates (both on the front); E ties B in thr but is worse in acc;
    # G is dominated by C and E; F has no accuracy (a failed trial).
    return pd.DataFrame({"acc": [0.9, 0.8, 0.8, 0.9, 0.7, np.nan, 0.6],
                         "thr": [100, 200, 150, 100, 200, 300, 100]},
                        index=list("ABCDEFG"))


def test_pareto_keeps_duplicates_and_drops_ties_that_lose(points):
    assert pareto_mask(points, MAX_BOTH)[lambda s: s].index.tolist() == ["A", "B", "D"]


def test_pareto_directions_mix_matches_the_flipped_problem(points):
    flipped = points.assign(err=1 - points["acc"], latency=1 / points["thr"])
    mixed = pareto_mask(flipped, {"err": "minimize", "thr": "maximize"})
    both_min = pareto_mask(flipped, {"err": "min", "latency": "min"})
    assert mixed.tolist() == pareto_mask(points, MAX_BOTH).tolist() == both_min.tolist()
    # minimising accuracy instead turns the front around: G (lowest acc) is now on it
    assert pareto_mask(points, {"acc": "minimize", "thr": "maximize"})["G"]


def test_pareto_ranks_peel_fronts(points):
    assert pareto_ranks(points, MAX_BOTH).to_dict() == {
        "A": 0, "B": 0, "C": 1, "D": 0, "E": 1, "F": -1, "G": 2}


def test_pareto_tolerance_keeps_points_within_noise_of_the_front():
    df = pd.DataFrame({"acc": [80.0, 79.5, 78.0, 80.5], "thr": [100, 90, 90, 50]},
                      index=list("ABCD"))
    assert pareto_mask(df, MAX_BOTH)[lambda s: s].index.tolist() == ["A", "D"]
    within = pareto_mask(df, MAX_BOTH, tolerance={"acc": 1.0})
    # B is only 0.5 behind A; C is 2 behind A and also slower, so measurably dominated
    assert within[lambda s: s].index.tolist() == ["A", "B", "D"]
    with pytest.raises(AnalysisError, match="not objectives"):
        pareto_mask(df, MAX_BOTH, tolerance={"latency": 1.0})


def test_pareto_front_is_sorted_best_first_and_table_has_objectives(points):
    assert pareto_front(points, MAX_BOTH).index.tolist() == ["A", "D", "B"]
    table = pareto_table(points.assign(spec=list("abcdefg")), MAX_BOTH)
    assert table.columns.tolist() == ["spec", "acc", "thr"]
    assert table["spec"].tolist() == ["a", "d", "b"]


def test_pareto_rejects_bad_directions_and_columns(points):
    with pytest.raises(AnalysisError, match="'up'"):
        pareto_mask(points, {"acc": "up"})
    with pytest.raises(UserError, match="'latency' is not in the table"):
        pareto_mask(points, {"latency": "minimize"})


def test_edf_counts_errors_at_most_e_and_reaches_one_at_the_worst():
    errors = [0.1, 0.2, 0.2, 0.4]
    assert edf(errors, at=[0.05, 0.1, 0.2, 0.3, 0.5]).tolist() == [0, 0.25, 0.75, 0.75, 1]
    assert edf(errors).tolist() == [0.25, 0.75, 1]  # at the distinct errors: ends at 1
    assert edf([0.1, np.nan, 0.3], at=[0.2]).tolist() == [0.5]


def test_weighted_edf_uses_normalised_weights():
    assert edf([0.1, 0.2, 0.3, 0.4], at=[0.35, 0.45], weights=[1, 1, 1, 3]).tolist() == [0.5, 1]


def test_complexity_weights_equalise_occupied_bins():
    weights = complexity_weights([1, 1, 1, 10], bins=[0, 5, 10])
    assert weights == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2])
    # an empty bin does not dilute the weights: they still sum to one
    assert complexity_weights([1, 1, 1, 10], bins=[0, 5, 8, 20]) == pytest.approx(weights)
    assert complexity_weights([1, np.nan], bins=[0, 5]).tolist() == [1.0, 0.0]


def test_complexity_bins_are_log_spaced_and_span_the_values():
    assert complexity_bins([1e6, 1e8], n_bins=2) == pytest.approx([1e6, 1e7, 1e8])
    with pytest.raises(AnalysisError, match="log=False"):
        complexity_bins([0, 10], n_bins=2)


def test_normalised_edf_table_reweights_the_large_model():
    df = pd.DataFrame({"err": [0.1, 0.2, 0.3, 0.4], "params": [1, 1, 1, 10],
                       "kind": ["a", "a", "b", "b"]})
    plain = edf_table(df, "err", at=[0.35])
    assert plain["edf"].tolist() == [0.75]
    norm = edf_table(df, "err", complexity="params", n_bins=2, log_bins=False, at=[0.35])
    assert norm["edf"].tolist() == [0.5]  # the three small models share half the weight
    by_kind = edf_table(df, "err", by="kind")
    assert by_kind["group"].unique().tolist() == ["a", "b"]
    a = by_kind[by_kind["group"] == "a"]
    assert a["edf"].tolist() == [0.5, 1, 1, 1] and a["n"].unique().tolist() == [2]
    # every group's curve reaches 1, the group holding the worst model included
    b = by_kind[by_kind["group"] == "b"]
    assert b["edf"].tolist() == [0, 0, 0.5, 1]


def test_bootstrap_of_a_constant_knob_is_that_constant():
    result = bootstrap_range([16] * 10, np.linspace(0.1, 1, 10), n_boot=200, seed=1)
    assert result[["p2.5", "p50", "p97.5"]].tolist() == [16, 16, 16]
    assert result["n"] == 10


def test_bootstrap_win_shares_match_the_exact_distribution():
    # Four pairs with error increasing in value, draws of 4 with replacement (frac=1): the best
    # value is v_i with probability ((4-i)/4)^4 - ((3-i)/4)^4.
    exact = [((4 - i) / 4) ** 4 - ((3 - i) / 4) ** 4 for i in range(4)]
    share = bootstrap_win_share([0, 1, 2, 3], [0.1, 0.2, 0.3, 0.4], n_boot=20000, frac=1.0,
                                seed=0)
    assert share.reindex([0, 1, 2, 3]).to_numpy() == pytest.approx(exact, abs=0.015)
    assert share.sum() == pytest.approx(1.0)


def test_bootstrap_percentiles_of_two_values():
    # best is value 1 only when both draws hit it: 1/4 of resamples, so p50 is 0, p97.5 is 1
    result = bootstrap_range([0, 1], [0.1, 0.2], n_boot=4000, frac=1.0, seed=3)
    assert result[["p2.5", "p50", "p97.5"]].tolist() == [0, 0, 1]


def test_bootstrap_is_reproducible_and_counts_a_quarter():
    values, errors = np.arange(40), np.random.default_rng(0).random(40)
    first = bootstrap_range(values, errors, seed=5)
    assert first.equals(bootstrap_range(values, errors, seed=5))
    assert not first.equals(bootstrap_range(values, errors, seed=6, n_boot=50))
    table = bootstrap_table(pd.DataFrame({"d": values, "e": errors}), ["d"], "e", seed=5)
    assert table.loc["d"].equals(first.rename("d"))


def test_bootstrap_winner_never_absent():
    # "c" has no error: it never wins, yet keeps its row (share 0). Of the two left, draws of 2
    # with replacement (frac=1) are won by "b" (error 0.9) only when both draws are "b": 1/4.
    share = bootstrap_win_share(["a", "b", "c"], [0.1, 0.9, np.nan], n_boot=20000, frac=1.0,
                                seed=0)
    assert list(share.index) == ["a", "b", "c"]  # best first
    assert share["a"] == pytest.approx(0.75, abs=0.015)
    assert share["b"] == pytest.approx(0.25, abs=0.015)
    assert share["c"] == 0.0 and share.sum() == pytest.approx(1.0)
    with pytest.raises(AnalysisError, match="bootstrap_win_share"):
        bootstrap_range(["a", "b"], [0.1, 0.2], n_boot=10)


@pytest.fixture
def repeats() -> pd.DataFrame:
    return pd.DataFrame({"spec": ["a", "a", "b", "b", "b", "c"],
                         "seed": [0, 1, 0, 1, 2, 0],
                         "acc": [0.5, 0.7, 0.6, 0.6, 0.9, 0.8]})


def test_seed_noise_pools_the_within_config_variance(repeats):
    spread = seed_spread(repeats, "acc", config="spec").set_index("spec")
    assert spread.loc["a", "std"] == pytest.approx(math.sqrt(0.02))
    assert spread.loc["b", "mean"] == pytest.approx(0.7)
    assert spread.loc["c", "runs"] == 1 and np.isnan(spread.loc["c", "std"])
    noise = seed_noise(repeats, "acc", config="spec")
    # (1 * 0.02 + 2 * 0.03) / 3 degrees of freedom
    assert noise["pooled_std"] == pytest.approx(math.sqrt(0.08 / 3))
    assert noise["repeated_configs"] == 2 and noise["repeated_runs"] == 5
    assert noise["max_range"] == pytest.approx(0.3)


def test_seed_noise_without_repeats_is_nan(repeats):
    single = repeats.drop_duplicates("spec")
    assert np.isnan(seed_noise(single, "acc", config="spec")["pooled_std"])


def test_choice_summary_averages_configurations_with_a_ci_over_seeds(repeats):
    df = repeats.assign(pattern=["x", "x", "y", "y", "y", "y"], thr=[1, 1, 2, 2, 2, 3])
    table = choice_summary(df, "pattern", {"acc": "max", "thr": "max"}, config="spec")
    assert table.loc["y", "trials"] == 4 and table.loc["y", "configs"] == 2
    # configuration means b 0.7 and c 0.8, each counted once however many seeds it ran
    assert table.loc["y", "acc_mean"] == pytest.approx(0.75)
    assert table.loc["x", "acc_seed_std"] == pytest.approx(math.sqrt(0.02))
    assert table.index.tolist() == ["y", "x"]  # best mean accuracy first
    # y per seed: 0 -> (0.6 + 0.8) / 2, 1 -> 0.6, 2 -> 0.9; the t interval over those 3 seeds
    per_seed = np.array([0.7, 0.6, 0.9])
    half = stats.t.ppf(0.975, 2) * per_seed.std(ddof=1) / math.sqrt(3)
    assert table.loc["y", "acc_ci_low"] == pytest.approx(per_seed.mean() - half)
    assert table.loc["y", "acc_ci_high"] == pytest.approx(per_seed.mean() + half)
    assert table.loc["x", "thr_ci_low"] >= 0  # a never-negative metric's interval stops at 0
    assert not any("tie" in c for c in table.columns)


def test_rank_statistics_equal_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 30).astype(float)  # ties on purpose
    y = x + rng.normal(0, 2, 30)
    result = rank_agreement(x, y, k=5)
    assert result["kendall_tau"] == pytest.approx(stats.kendalltau(x, y).statistic)
    assert result["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert result["n"] == 30 and result["k"] == 5


def test_top_k_overlap_by_hand():
    x, y = [5, 4, 3, 2, 1], [1, 4, 3, 2, 5]
    assert top_k_overlap(x, y, 2) == 0.5  # {0, 1} vs {4, 1}
    assert top_k_overlap(x, y, 2, higher_is_better=False) == 0.5  # {4, 3} vs {0, 3}
    assert top_k_overlap(x, y, 5) == 1.0
    with pytest.raises(AnalysisError, match="k must be"):
        top_k_overlap(x, y, 0)


def test_rank_agreement_ci_of_perfect_and_reversed_rankings():
    x = np.arange(12.0)
    same = rank_agreement_ci(x, 2 * x + 1, k=3, n_boot=200, seed=0)
    assert same.to_numpy() == pytest.approx(np.ones((3, 3)))
    reverse = rank_agreement_ci(x, -x, k=3, n_boot=200, seed=0)
    assert reverse.loc["kendall_tau", "high"] == pytest.approx(-1)
    assert reverse.loc["top_k_overlap", "high"] == 0


def test_rank_agreement_ci_brackets_the_estimate():
    rng = np.random.default_rng(1)
    x = rng.normal(size=25)
    table = rank_agreement_ci(x, x + rng.normal(0, 1, 25), n_boot=300, seed=2)
    assert (table["low"] <= table["estimate"]).all() and (table["estimate"] <= table["high"]).all()
    assert table.loc["kendall_tau", "high"] - table.loc["kendall_tau", "low"] > 0.05


@pytest.fixture
def two_fidelities() -> pd.DataFrame:
    rows = []
    for spec, short, long, size in [("a", 0.5, 0.70, 10), ("b", 0.6, 0.65, 30),
                                    ("c", 0.7, 0.80, 20), ("d", 0.4, 0.60, 5)]:
        rows += [{"spec": spec, "fidelity": "e2", "acc": short, "seed": 0, "params": size},
                 {"spec": spec, "fidelity": "e8", "acc": long, "seed": 0, "params": size}]
    rows += [{"spec": "a", "fidelity": "e2", "acc": 0.6, "seed": 1, "params": 10},
             {"spec": "e", "fidelity": "e2", "acc": 0.9, "seed": 0, "params": 1}]
    return pd.DataFrame(rows)


def test_paired_fidelities_average_seeds_and_drop_unpaired(two_fidelities):
    paired = paired_fidelities(two_fidelities, "acc", "e2", "e8").set_index("spec")
    assert paired.index.tolist() == ["a", "b", "c", "d"]
    assert paired.loc["a", "e2"] == pytest.approx(0.55) and paired.loc["a", "e2_runs"] == 2
    assert paired.loc["b", "params"] == 30
    with pytest.raises(AnalysisError, match="'e4' is not in column 'fidelity'"):
        paired_fidelities(two_fidelities, "acc", "e4", "e8")


def test_fidelity_table_compares_proxy_with_params_baseline(two_fidelities):
    table = fidelity_table(two_fidelities, "acc", "e2", "e8", baselines=("params",), k=2,
                           n_boot=100)
    paired = paired_fidelities(two_fidelities, "acc", "e2", "e8")
    proxy = rank_agreement(paired["e2"], paired["e8"], k=2)
    assert table.loc["e2", "kendall_tau"] == pytest.approx(proxy["kendall_tau"])
    # params rank the 4-config target with rho 0.2: positive, so scored as "larger is better"
    assert table.loc["params", "direction"] == "larger"
    assert table.loc["params", "spearman_rho"] == pytest.approx(
        stats.spearmanr(paired["params"], paired["e8"]).statistic)
    assert table.loc["e2", "top_k_overlap"] == 0.5  # top-2 {c, b} vs {c, a}
    assert set(table.columns) >= {"kendall_tau_low", "kendall_tau_high", "k", "n"}


def test_spec_fields_reads_the_canonical_form():
    spec = ("stem=32 mlp=4 | depth=1 width=80 pattern=conv | depth=8 width=320 "
            "pattern=last_half d_state=8 conv1d=regular")
    fields = spec_fields(spec)
    assert fields["stem"] == "32" and fields["s1.pattern"] == "conv"
    assert fields["s2.pattern"] == "last_half" and fields["s2.conv1d"] == "regular"


def test_analysis_modules_import_no_torch_and_no_model_code():
    # The layer contract (docs/DESIGN.md): analysis reads tables, it never builds or trains.
    # Checked on the source: a runtime check would miss an import inside a function that only
    # some plots call (tests/test_light_import.py checks the package's import at run time).
    forbidden = ("torch", "timm", "mvlab.models", "mvlab.training", "mvlab.data",
                 "mvlab.ops", "mvlab.study", "mvlab.grammar")
    package = Path(mvlab.analysis.__file__).parent
    offenders = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {m}" for m in modules
                          if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert offenders == []


def test_vectorised_bootstrap_statistics_equal_scipy_row_by_row():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 5, (40, 9)).astype(float)  # resamples repeat items: many ties
    y = x + rng.integers(0, 3, (40, 9))
    x[0] = 1.0  # a constant resample: undefined, NaN like scipy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        expected_tau = [stats.kendalltau(a, b).statistic for a, b in zip(x, y, strict=True)]
        expected_rho = [stats.spearmanr(a, b).statistic for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(kendall_tau_b_rows(x, y), expected_tau, atol=1e-12)
    np.testing.assert_allclose(spearman_rho_rows(x, y), expected_rho, atol=1e-12)
    np.testing.assert_array_equal(top_k_overlap_rows(x, y, 3),
                                  [top_k_overlap(a, b, 3) for a, b in zip(x, y, strict=True)])


def test_pareto_plot_marks_exactly_the_front(points):
    from mvlab.analysis.plots import plot_pareto

    labelled = points.assign(pattern=["x", "y", "x", "y", "x", "y", "x"])
    figure = plot_pareto(labelled, "thr", "acc", MAX_BOTH, label="pattern", annotate="pattern")
    ax = figure.axes[0]
    large = [c for c in ax.collections if len(c.get_offsets()) and c.get_sizes()[0] > 40]
    front = sorted(tuple(p) for c in large for p in c.get_offsets().tolist())
    assert front == [(100.0, 0.9), (100.0, 0.9), (200.0, 0.8)]  # A, D and B; F has no acc
    assert len(ax.texts) == 3


def test_edf_pair_adds_the_normalised_panel_only_when_complexity_varies():
    from mvlab.analysis.plots import plot_edf_pair

    df = pd.DataFrame({"err": [10.0, 20, 30, 40], "params": [1e6, 1e6, 2e6, 8e6],
                       "kind": ["a", "a", "b", "b"]})
    assert len(plot_edf_pair(df, "err", "kind").axes) == 2
    assert len(plot_edf_pair(df.assign(params=1e6), "err", "kind").axes) == 1


def test_knob_label_names_the_architecture_without_budget_and_seed():
    df = pd.DataFrame({"params.pattern": ["a", "b", "a"], "params.branch": ["on", "on", "off"],
                       "params.train.epochs": [1, 4, 1], "params.seed": [0, 1, 0],
                       "params.d_state": [8, 8, 8]})
    assert knob_label(df).tolist() == ["pattern=a branch=on", "pattern=b branch=on",
                                       "pattern=a branch=off"]
    assert knob_label(df, ["params.d_state"]).tolist() == ["d_state=8"] * 3

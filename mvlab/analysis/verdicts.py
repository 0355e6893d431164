"""Each configuration against a study's reference (or any named pairs, e.g. a calibration
gate's positive controls): a paired difference over seeds and a verdict.

Seeds are blocks: every trial of a seed shares its data order, augmentation and (where the
networks agree) initial weights, so configuration ``c`` is compared with the reference on the
seeds both ran, one difference ``d_s = x_c,s - x_ref,s`` per seed. With ``n`` such seeds:

* the noise: by default each comparison's own sd of ``d_s`` (n - 1 degrees of freedom), which
  is right whatever each configuration's seed noise; or (``pooled=True``) one level for the
  study (``block_noise``: the configurations x seeds residual with seeds as blocks, (K - 1)(n - 1)
  degrees of freedom), which assumes every configuration is equally noisy across seeds. That
  assumption fails on these proxies (in the calibration gate attn_only spread over 26 points
  across four seeds, conv-only over 4), and then the pooled level is too wide for
  the steady pairs and too narrow for the noisy ones: ``mvlab.analysis.noise.noise_homogeneity``
  tests it;
* the difference: mean of ``d_s`` with a t interval at the Bonferroni level ``1 - alpha / m``
  for ``m`` comparisons (the level Holm's first step uses, so an interval that excludes zero
  always goes with a Holm-significant difference);
* "different": the paired t-test, p Holm-adjusted across the ``m`` comparisons;
* "equivalent": TOST at ``margin`` (both one-sided tests of |difference| < margin), the larger
  of its two p Holm-adjusted across the comparisons as well;
* the verdict: ``equivalent`` when equivalence is shown (the difference lies within the margin,
  even if a smaller one is also shown), else ``better`` / ``worse`` when a difference is shown
  (sign in the metric's good direction), else ``undetermined``: not shown different and not
  shown equivalent, which is all that "within noise" ever meant;
* ``mde``: the smallest true difference this many seeds detect with 80 % power at the adjusted
  level (t quantiles, the observed sd of the differences); ``seeds_for_margin``: the number of
  seeds at which the margin itself becomes that detectable difference, i.e. at which a margin-sized
  difference is found or its absence shown with 80 % power.

An ordered hypothesis (a paper's ranking) is tested with Page's L (seeds as blocks,
configurations as treatments; scipy's ``page_trend_test``)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from mvlab.analysis.errors import AnalysisError
from mvlab.records import SEED

VERDICTS = ("better", "worse", "equivalent", "undetermined")
DEFAULT_MARGIN = 0.5  # top-1 points
DEFAULT_ALPHA = 0.05
DEFAULT_POWER = 0.8
MAX_SEEDS = 10_000  # beyond this, "seeds_for_margin" is reported as not reachable (inf)


def seed_matrix(df: pd.DataFrame, metric: str, config: str = "config",
                seed: str = SEED) -> pd.DataFrame:
    """Configurations x seeds table of ``metric`` (the mean where a (configuration, seed) cell
    holds several trials, e.g. duplicate points of one network)."""
    for column in (metric, config, seed):
        if column not in df.columns:
            raise AnalysisError(f"column {column!r} is not in the table; it has "
                                f"{sorted(map(str, df.columns))}")
    values = df.assign(_m=pd.to_numeric(df[metric], errors="coerce")).dropna(subset=["_m"])
    if values.empty:
        raise AnalysisError(f"column {metric!r} has no finite values")
    return values.pivot_table(index=config, columns=seed, values="_m", aggfunc="mean",
                              sort=False)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = tested.size
    running = 0.0
    for rank, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def _t_quantile(q: float, dof: int) -> float:
    return float(stats.t.ppf(q, dof)) if dof >= 1 else math.inf


def paired_tests(diffs: np.ndarray, margin: float, sd: float | None = None,
                 dof: int | None = None) -> dict[str, float]:
    """Mean and n of per-seed differences; p of the paired t-test (two-sided), of TOST, and of
    its two one-sided halves (``p_lower``: H0 difference <= -margin; ``p_upper``: >= +margin).

    ``sd``/``dof``: a pooled standard deviation of differences and its degrees of freedom
    (default: this comparison's own, n - 1). A zero sd (differences quantised to one value,
    e.g. 2 seeds on a 600-image split) estimates no noise: the p-values are then NaN, unless a
    pooled sd was given and is itself zero (bit-identical networks)."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    n = int(d.size)
    mean = float(d.mean()) if n else math.nan
    pooled = sd is not None
    if not pooled:
        sd = float(d.std(ddof=1)) if n >= 2 else math.nan
        dof = n - 1
    nothing = {"n": n, "diff": mean, "sd": sd, "dof": dof, "p_diff": math.nan,
               "p_equiv": math.nan, "p_lower": math.nan, "p_upper": math.nan}
    if n < (1 if pooled else 2) or not math.isfinite(sd) or not dof or dof < 1:
        return nothing
    if sd == 0.0:
        if not pooled:
            return nothing
        return {**nothing, "p_diff": 1.0 if mean == 0 else 0.0,
                "p_equiv": 0.0 if abs(mean) < margin else 1.0,
                "p_lower": 0.0 if mean > -margin else 1.0,
                "p_upper": 0.0 if mean < margin else 1.0}
    se = sd / math.sqrt(n)
    p_diff = float(2 * stats.t.sf(abs(mean) / se, dof))
    p_lower = float(stats.t.sf((mean + margin) / se, dof))   # H0: diff <= -margin
    p_upper = float(stats.t.cdf((mean - margin) / se, dof))  # H0: diff >= +margin
    return {**nothing, "p_diff": p_diff, "p_equiv": max(p_lower, p_upper), "p_lower": p_lower,
            "p_upper": p_upper}


def detectable_effect(sd: float, n: int, alpha: float, power: float = DEFAULT_POWER,
                      dof: int | None = None) -> float:
    """Smallest true difference a paired t-test on ``n`` seeds finds with ``power`` (two-sided
    level ``alpha``), for per-seed differences of standard deviation ``sd`` (``dof``: its
    degrees of freedom, default n - 1)."""
    dof = n - 1 if dof is None else dof
    if n < 1 or dof < 1 or not math.isfinite(sd):
        return math.inf
    return (_t_quantile(1 - alpha / 2, dof) + _t_quantile(power, dof)) * sd / math.sqrt(n)


def seeds_for(effect: float, sd: float, alpha: float, power: float = DEFAULT_POWER) -> float:
    """Fewest seeds at which ``effect`` is the detectable difference (inf if over MAX_SEEDS);
    n - 1 degrees of freedom (a per-comparison sd), a conservative count for a pooled one."""
    if not math.isfinite(sd) or sd == 0.0:
        return math.nan
    low, high = 2, MAX_SEEDS
    if detectable_effect(sd, high, alpha, power) > effect:
        return math.inf
    while low < high:  # the detectable effect falls monotonically with n
        middle = (low + high) // 2
        if detectable_effect(sd, middle, alpha, power) <= effect:
            high = middle
        else:
            low = middle + 1
    return float(low)


def block_noise(matrix: pd.DataFrame) -> tuple[float, int]:
    """The sd of a paired difference between two configurations and its degrees of freedom, from
    a configurations x seeds table under the additive model x = configuration + seed + noise:
    the residual over the seeds every configuration ran, sigma^2 = SS / ((K - 1)(n - 1)), the sd
    of a difference sqrt(2) sigma. (nan, 0) with fewer than 2 configurations or seeds."""
    block = matrix.dropna(axis=1, how="any").to_numpy(dtype=float)
    k, n = block.shape if block.ndim == 2 else (0, 0)
    if k < 2 or n < 2:
        return math.nan, 0
    residual = (block - block.mean(axis=1, keepdims=True) - block.mean(axis=0, keepdims=True)
                + block.mean())
    dof = (k - 1) * (n - 1)
    return math.sqrt(2.0 * float((residual ** 2).sum()) / dof), dof


def compare_to_reference(df: pd.DataFrame, metric: str, reference: str,
                         config: str = "config", seed: str = SEED,
                         margin: float = DEFAULT_MARGIN, alpha: float = DEFAULT_ALPHA,
                         higher_is_better: bool = True, power: float = DEFAULT_POWER,
                         pooled: bool = False) -> pd.DataFrame:
    """One row per configuration other than ``reference`` (a value of column ``config``):
    ``compare_pairs`` with every other configuration against the reference, sorted best first
    (without its ``against`` column; ``attrs["reference"]`` names it)."""
    matrix = seed_matrix(df, metric, config, seed)
    if reference not in matrix.index:
        raise AnalysisError(f"reference configuration {reference!r} is not in column "
                            f"{config!r}; it has {sorted(map(str, matrix.index))}")
    others = [c for c in matrix.index if c != reference]
    if not others:
        raise AnalysisError("only the reference configuration is in the table; nothing to compare")
    table = compare_pairs(df, metric, [(name, reference) for name in others], config, seed,
                          margin, alpha, higher_is_better, power, pooled)
    table = table.drop(columns=["against", "p_noninferior", "p_noninferior_holm"]).sort_values(
        "diff", ascending=not higher_is_better, kind="stable").reset_index(drop=True)
    table.attrs.update(reference=reference)
    return table


def compare_pairs(df: pd.DataFrame, metric: str, pairs: Sequence[tuple[str, str]],
                  config: str = "config", seed: str = SEED,
                  margin: float = DEFAULT_MARGIN, alpha: float = DEFAULT_ALPHA,
                  higher_is_better: bool = True, power: float = DEFAULT_POWER,
                  pooled: bool = False) -> pd.DataFrame:
    """One row per pair ``(a, b)`` of values of column ``config``, in the order given: ``a``
    against ``b`` paired over the seeds both ran, Holm-adjusted across the pairs (module doc).

    The noise of a pair is by default its own: the sd of its per-seed differences, n - 1
    degrees of freedom, valid however noisy each configuration is (with 2 seeds that is one
    degree of freedom, and no estimate at all when the two differences happen to be equal).
    ``pooled``: one noise level for all pairs (``block_noise``): the residual of the
    configurations x seeds table of every configuration the pairs involve, seeds as blocks,
    (K - 1)(n - 1) degrees of freedom, the sd of a difference sqrt(2) sigma; more degrees of
    freedom, right only when every configuration is equally noisy (module doc).

    Columns: config (a), against (b), verdict (of a against b), seeds (paired), diff (a - b),
    ci_low, ci_high (level 1 - alpha/m), sd, dof, p_diff and p_diff_holm, p_equiv and
    p_equiv_holm (TOST at ``margin``), p_noninferior and p_noninferior_holm (a at most
    ``margin`` worse than b, one-sided), mde and seeds_for_margin. ``attrs`` keep the
    settings."""
    if not margin > 0:
        raise AnalysisError(f"equivalence margin must be > 0, got {margin}")
    if not 0 < alpha < 1:
        raise AnalysisError(f"alpha must be in (0, 1), got {alpha}")
    if not pairs:
        raise AnalysisError("no pairs to compare")
    matrix = seed_matrix(df, metric, config, seed)
    involved = list(dict.fromkeys(n for pair in pairs for n in pair))
    for name in involved:
        if name not in matrix.index:
            raise AnalysisError(f"configuration {name!r} is not in column {config!r}; it has "
                                f"{sorted(map(str, matrix.index))}")
    for a, b in pairs:
        if a == b:
            raise AnalysisError(f"a pair compares {a!r} with itself")
    m = len(pairs)
    level = alpha / m
    diffs = [(matrix.loc[a] - matrix.loc[b]).dropna().to_numpy() for a, b in pairs]
    shared_sd = shared_dof = None
    if pooled:
        shared_sd, shared_dof = block_noise(matrix.loc[involved])
    rows = []
    for (a, b), d in zip(pairs, diffs, strict=True):
        tests = paired_tests(d, margin, shared_sd, shared_dof)
        n, sd, dof = tests["n"], tests["sd"], tests["dof"]
        finite = n >= 1 and dof and dof >= 1 and math.isfinite(sd) and (sd > 0 or pooled)
        half = _t_quantile(1 - level / 2, dof) * sd / math.sqrt(n) if finite else math.inf
        rows.append({config: a, "against": b, "seeds": n, "diff": tests["diff"],
                     "ci_low": tests["diff"] - half, "ci_high": tests["diff"] + half, "sd": sd,
                     "dof": dof, "p_diff": tests["p_diff"], "p_equiv": tests["p_equiv"],
                     # a not more than the margin worse than b (non-inferiority, one-sided)
                     "p_noninferior": tests["p_lower" if higher_is_better else "p_upper"],
                     "mde": detectable_effect(sd, n, level, power, dof) if finite else math.inf,
                     "seeds_for_margin": seeds_for(margin, sd, level, power)})
    table = pd.DataFrame(rows)
    table["p_diff_holm"] = holm(table["p_diff"])
    table["p_equiv_holm"] = holm(table["p_equiv"])
    table["p_noninferior_holm"] = holm(table["p_noninferior"])
    sign = 1.0 if higher_is_better else -1.0
    shown = table["p_diff_holm"] < alpha
    verdict = np.where(table["p_equiv_holm"] < alpha, "equivalent",
                       np.where(shown & (sign * table["diff"] > 0), "better",
                                np.where(shown, "worse", "undetermined")))
    table["verdict"] = verdict
    columns = [config, "against", "verdict", "seeds", "diff", "ci_low", "ci_high", "sd", "dof",
               "p_diff", "p_diff_holm", "p_equiv", "p_equiv_holm", "p_noninferior",
               "p_noninferior_holm", "mde", "seeds_for_margin"]
    table = table[columns]
    table.attrs.update(metric=metric, margin=margin, alpha=alpha, comparisons=m,
                       ci_level=1 - level, power=power, pooled=pooled)
    return table


def page_trend(df: pd.DataFrame, metric: str, order: Sequence[str], config: str = "config",
               seed: str = SEED) -> pd.Series:
    """Page's L test that ``metric`` increases along ``order`` (worst-predicted first), with
    seeds as blocks; only seeds that ran every configuration in ``order`` count.

    Returns statistic L, p (one-sided), seeds and k (configurations)."""
    if len(order) < 3:
        raise AnalysisError(f"a trend test needs at least 3 ordered configurations, got "
                            f"{len(order)}")
    matrix = seed_matrix(df, metric, config, seed)
    missing = [c for c in order if c not in matrix.index]
    if missing:
        raise AnalysisError(f"configurations {missing} of the ordered hypothesis are not in "
                            f"column {config!r}; it has {sorted(map(str, matrix.index))}")
    blocks = matrix.loc[list(order)].T.dropna()
    if len(blocks) < 2:
        raise AnalysisError(f"Page's test needs at least 2 seeds that ran all {len(order)} "
                            f"configurations, got {len(blocks)}")
    result = stats.page_trend_test(blocks.to_numpy())
    return pd.Series({"L": float(result.statistic), "p": float(result.pvalue),
                      "seeds": int(len(blocks)), "k": len(order), "method": result.method},
                     name=metric)

"""Does a cheap proxy rank architectures like a longer run? Rank agreement with CIs.

Kendall tau-b and Spearman rho are scipy's; top-k overlap is |top-k(x) & top-k(y)| / k with equal
scores ordered as in the table. ``rank_agreement_ci`` resamples the items of two fixed rankings;
``fidelity_table`` resamples configurations *and their seeds*, the interval a study needs. Params
and FLOPs are the baseline rankers, each in its better direction: a proxy that ranks no better
than model size is not worth running."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from mvlab.analysis.errors import AnalysisError
from mvlab.analysis.noise import config_columns
from mvlab.records import FIDELITY, MACS, PARAMS, SPEC

STATISTICS = ("kendall_tau", "spearman_rho", "top_k_overlap")


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _top_k(values: np.ndarray, k: int, higher_is_better: bool) -> set[int]:
    keyed = -values if higher_is_better else values
    return set(np.argsort(keyed, kind="stable")[:k].tolist())


def top_k_overlap(x, y, k: int, higher_is_better: bool = True) -> float:
    """Share of the k best items under ``x`` that are also among the k best under ``y``."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape:
        raise AnalysisError(f"rankings differ in length: {a.size} vs {b.size}")
    if not 1 <= k <= a.size:
        raise AnalysisError(f"k must be between 1 and the number of items ({a.size}), got {k}")
    return len(_top_k(a, k, higher_is_better) & _top_k(b, k, higher_is_better)) / k


def rank_agreement(x, y, k: int | None = None, higher_is_better: bool = True) -> dict[str, float]:
    """Kendall tau-b, Spearman rho and top-k overlap (k defaults to a quarter, at least 1)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2:
        raise AnalysisError(f"rank agreement needs at least 2 configurations with both scores, "
                            f"got {a.size}")
    k = max(1, a.size // 4) if k is None else min(k, a.size)
    return {"kendall_tau": float(stats.kendalltau(a, b).statistic),
            "spearman_rho": float(stats.spearmanr(a, b).statistic),
            "top_k_overlap": top_k_overlap(a, b, k, higher_is_better), "k": k, "n": int(a.size)}


def kendall_tau_b_rows(x: np.ndarray, y: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Kendall tau-b of every row pair of two (resamples, n) arrays; NaN for a constant row.

    The same statistic as scipy.stats.kendalltau, vectorised over bootstrap resamples."""
    result = np.empty(len(x))
    upper = np.triu_indices(x.shape[1], k=1)
    for start in range(0, len(x), chunk):
        xs, ys = x[start:start + chunk], y[start:start + chunk]
        dx = np.sign(xs[:, :, None] - xs[:, None, :])[:, upper[0], upper[1]]
        dy = np.sign(ys[:, :, None] - ys[:, None, :])[:, upper[0], upper[1]]
        with np.errstate(invalid="ignore", divide="ignore"):
            result[start:start + chunk] = (dx * dy).sum(1) / np.sqrt(
                np.count_nonzero(dx, axis=1) * np.count_nonzero(dy, axis=1))
    return result


def spearman_rho_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho (Pearson of average ranks) of every row pair; NaN for a constant row."""
    rx = stats.rankdata(x, axis=1)
    ry = stats.rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(1) / np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))


def top_k_overlap_rows(x: np.ndarray, y: np.ndarray, k: int,
                       higher_is_better: bool = True) -> np.ndarray:
    """``top_k_overlap`` of every row pair of two (resamples, n) arrays."""
    sign = -1.0 if higher_is_better else 1.0
    rows = np.arange(len(x))[:, None]
    in_x = np.zeros(x.shape, dtype=bool)
    in_y = np.zeros(y.shape, dtype=bool)
    in_x[rows, np.argsort(sign * x, axis=1, kind="stable")[:, :k]] = True
    in_y[rows, np.argsort(sign * y, axis=1, kind="stable")[:, :k]] = True
    return (in_x & in_y).sum(1) / k


def rank_agreement_ci(x, y, k: int | None = None, n_boot: int = 1000, ci: float = 95.0,
                      seed=0, higher_is_better: bool = True) -> pd.DataFrame:
    """Rank agreement with percentile bootstrap CIs over configurations.

    Rows: kendall_tau, spearman_rho, top_k_overlap; columns: estimate, low, high. Resamples in
    which a statistic is undefined (a constant ranking) are left out of its interval."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    point = rank_agreement(a, b, k, higher_is_better)
    draws = _rng(seed).integers(0, a.size, size=(n_boot, a.size))
    boot = np.column_stack([kendall_tau_b_rows(a[draws], b[draws]),
                            spearman_rho_rows(a[draws], b[draws]),
                            top_k_overlap_rows(a[draws], b[draws], point["k"], higher_is_better)])
    tail = (100.0 - ci) / 2
    low = np.nanpercentile(boot, tail, axis=0)
    high = np.nanpercentile(boot, 100.0 - tail, axis=0)
    table = pd.DataFrame({"estimate": [point[s] for s in STATISTICS], "low": low, "high": high},
                         index=list(STATISTICS))
    table.attrs.update(k=point["k"], n=point["n"], n_boot=n_boot, ci=ci)
    return table


def paired_fidelities(df: pd.DataFrame, metric: str, low: str, high: str,
                      fidelity: str = FIDELITY, config: str | Sequence[str] = SPEC,
                      carry: Sequence[str] = (PARAMS, MACS)) -> pd.DataFrame:
    """One row per configuration measured at both fidelities: seed-mean ``metric`` at each.

    Columns: the config columns, ``low``, ``high``, ``<low>_runs``, ``<high>_runs`` and the
    ``carry`` columns that exist (first value per configuration, e.g. params and macs)."""
    for column in (metric, fidelity):
        if column not in df.columns:
            raise AnalysisError(f"column {column!r} is not in the table")
    keys = config_columns(df, config)
    labels = set(df[fidelity].dropna().astype(str))
    for label in (low, high):
        if label not in labels:
            raise AnalysisError(f"fidelity {label!r} is not in column {fidelity!r}; it has "
                                f"{sorted(labels)}")
    table = df.assign(_m=pd.to_numeric(df[metric], errors="coerce"),
                      _f=df[fidelity].astype(str)).dropna(subset=["_m"])
    table = table[table["_f"].isin([low, high])]
    means = table.pivot_table(index=keys, columns="_f", values="_m", aggfunc="mean")
    runs = table.pivot_table(index=keys, columns="_f", values="_m", aggfunc="count")
    paired = pd.DataFrame({low: means.get(low), high: means.get(high),
                           f"{low}_runs": runs.get(low), f"{high}_runs": runs.get(high)})
    present = [c for c in carry if c in table.columns]
    if present:
        paired = paired.join(table.groupby(keys)[present].first())
    return paired.dropna(subset=[low, high]).reset_index()


def _seed_draws(matrix: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, configs) means of each configuration's seeds resampled with replacement.

    ``matrix`` is configurations x seed slots, NaN where a configuration has fewer seeds."""
    out = np.empty((n_boot, len(matrix)))
    for i, row in enumerate(matrix):
        seeds = row[np.isfinite(row)]
        out[:, i] = seeds[rng.integers(0, seeds.size, size=(n_boot, seeds.size))].mean(1)
    return out


def _per_seed(table: pd.DataFrame, keys: list[str], label: str, index: pd.Index) -> np.ndarray:
    runs = table[table["_f"] == label].groupby(keys, sort=False)["_m"].apply(list)
    runs = runs.reindex(index)
    width = max(len(r) for r in runs)
    return np.array([r + [np.nan] * (width - len(r)) for r in runs], dtype=float)


def fidelity_table(df: pd.DataFrame, metric: str, low: str, high: str,
                   baselines: Sequence[str] = (PARAMS, MACS), fidelity: str = FIDELITY,
                   config: str | Sequence[str] = SPEC, k: int | None = None,
                   n_boot: int = 1000, ci: float = 95.0, seed=0) -> pd.DataFrame:
    """How well each ranker predicts the ranking of configurations by their ``high``-fidelity
    seed mean: the ``low``-fidelity seed mean (the proxy) and each baseline column (params, MACs).

    Intervals are a bootstrap that resamples configurations and, within each, its seeds at both
    fidelities, so seed noise widens them (resampling configurations alone treats every seed mean
    as exact). The proxy is scored as larger-is-better; a baseline in the direction that ranks
    better (``direction``: larger or smaller), since "smaller models are better" is as naive a
    guess as "larger". One row per ranker: <statistic>, <statistic>_low, <statistic>_high for each
    statistic, direction, k and n."""
    paired = paired_fidelities(df, metric, low, high, fidelity, config, carry=baselines)
    keys = config_columns(df, config)
    table = df.assign(_m=pd.to_numeric(df[metric], errors="coerce"),
                      _f=df[fidelity].astype(str)).dropna(subset=["_m"])
    index = pd.MultiIndex.from_frame(paired[keys]) if len(keys) > 1 else pd.Index(paired[keys[0]])
    if len(paired) < 3:
        raise AnalysisError(f"rank agreement needs at least 3 configurations measured at both "
                            f"fidelities, got {len(paired)}")
    rng = _rng(seed)
    target = paired[high].to_numpy(dtype=float)
    target_draws = _seed_draws(_per_seed(table, keys, high, index), n_boot, rng)
    proxy_draws = _seed_draws(_per_seed(table, keys, low, index), n_boot, rng)
    rows = rng.integers(0, len(paired), size=(n_boot, len(paired)))
    pick = np.arange(n_boot)[:, None]
    target_boot = target_draws[pick, rows]
    rankers = {low: (paired[low].to_numpy(dtype=float), proxy_draws[pick, rows], "larger")}
    for name in baselines:
        if name not in paired.columns:
            continue
        values = pd.to_numeric(paired[name], errors="coerce").to_numpy(dtype=float)
        tau = rank_agreement(values, target)["kendall_tau"]
        sign, direction = (-1.0, "smaller") if tau < 0 else (1.0, "larger")
        rankers[name] = (sign * values, sign * values[rows], direction)
    result = {}
    tail = (100.0 - ci) / 2
    for name, (point_values, boot_values, direction) in rankers.items():
        point = rank_agreement(point_values, target, k)
        boot = np.column_stack([kendall_tau_b_rows(boot_values, target_boot),
                                spearman_rho_rows(boot_values, target_boot),
                                top_k_overlap_rows(boot_values, target_boot, point["k"])])
        row: dict = {}
        for j, statistic in enumerate(STATISTICS):
            finite = boot[:, j][np.isfinite(boot[:, j])]
            row[statistic] = point[statistic]
            row[f"{statistic}_low"] = float(np.percentile(finite, tail)) if finite.size else np.nan
            row[f"{statistic}_high"] = (float(np.percentile(finite, 100 - tail)) if finite.size
                                        else np.nan)
        result[name] = {**row, "direction": direction, "k": point["k"], "n": point["n"]}
    out = pd.DataFrame.from_dict(result, orient="index")
    out.attrs.update(n_boot=n_boot, ci=ci, resampled="configurations and seeds within them")
    return out

"""The calibration gate: does a proxy show what it must before its rankings are believed?

A study's ``analysis.gate`` (``GateSettings``) names positive controls, pairs of configurations
whose difference the instrument has to resolve (conv-only token stages against mixers, a width
step), a band the configuration means must lie in (far enough from chance and from saturation
that differences can show; configurations ``band_exempt`` names are listed, not judged), every
seed off the plateau (``mvlab.analysis.plateau``; whenever the trials record it), and the
study's ``reliability_threshold`` for split-half reliability (unless ``reliability: false``,
for a study of two configurations). ``evaluate_gate`` turns one fidelity of a study
into one row per criterion; the gate passes only when every row does. A control that is not
shown different at these seeds fails the gate with the seeds it would take: "undetermined" is
not a pass.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mvlab.records import SEED, TRIAL

# What each expectation accepts of the verdict of a against b (mvlab.analysis.verdicts);
# not_worse is its own one-sided test (``_passes``).
ACCEPTS = {"differ": ("better", "worse"), "better": ("better",),
           "resolved": ("better", "worse", "equivalent")}
COLUMNS = ["criterion", "required", "observed", "passed"]


def _knobs(point: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items())


def control_rows(rows: pd.DataFrame, controls: Sequence[Mapping[str, Any]],
                 config_of: Callable[[Mapping[str, Any]], str | None], accuracy: str,
                 config: str, margin: float, maximise: bool, alpha: float = 0.05,
                 pooled: bool = False) -> list[dict[str, Any]]:
    """One row per control: its verdict (paired over seeds, Holm across the controls; the
    noise each pair's own unless ``pooled``)."""
    from mvlab.analysis import AnalysisError, compare_pairs

    found, missing = [], []
    for control in controls:
        pair = (config_of(control["a"]), config_of(control["b"]))
        (found if None not in pair else missing).append((control, pair))
    out = [{"criterion": _name(c), "required": _required(c, margin), "passed": False,
            "observed": "a side matches no single configuration with results yet"}
           for c, _ in missing]
    if not found:
        return out
    try:
        table = compare_pairs(rows, accuracy, [pair for _, pair in found], config=config,
                              margin=margin, alpha=alpha, higher_is_better=maximise,
                              pooled=pooled)
    except AnalysisError as exc:
        return out + [{"criterion": _name(c), "required": _required(c, margin), "passed": False,
                       "observed": str(exc)} for c, _ in found]
    level = table.attrs["ci_level"] * 100
    for (control, _), result in zip(found, table.to_dict("records"), strict=True):
        verdict = result["verdict"]
        observed = (f"{verdict}: {result['diff']:+.2f} points ({level:.1f} % CI "
                    f"{result['ci_low']:+.2f} to {result['ci_high']:+.2f}), {result['seeds']} "
                    f"seeds")
        if verdict == "undetermined" and math.isfinite(result["mde"]):
            observed += f"; detectable at these seeds: {result['mde']:.2f} points"
        if control["expect"] == "not_worse":
            observed += f"; non-inferiority p (Holm) {result['p_noninferior_holm']:.3g}"
        out.append({"criterion": _name(control), "required": _required(control, margin),
                    "observed": observed, "passed": _passes(control["expect"], result, alpha)})
    return out


def _passes(expect: str, result: Mapping[str, Any], alpha: float) -> bool:
    if expect == "not_worse":  # shown at most `margin` below b (one-sided), Holm over controls
        return bool(result["p_noninferior_holm"] < alpha)
    return result["verdict"] in ACCEPTS[expect]


def _name(control: Mapping[str, Any]) -> str:
    return control.get("name") or f"{_knobs(control['a'])} vs {_knobs(control['b'])}"


def _required(control: Mapping[str, Any], margin: float = 0.5) -> str:
    return {"differ": "better or worse (a difference shown)",
            "better": "better (a above b, shown)",
            "resolved": "a verdict: better, worse or equivalent (not undetermined)",
            "not_worse": f"a shown at most {margin:g} points below b (one-sided)"}[
        control["expect"]]


def band_row(means: pd.DataFrame, band: Sequence[float], accuracy: str, label: str,
             config: str, exempt: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Every configuration mean inside ``band``, except the ``exempt`` ones ({an entry in words:
    the values of ``means[config]`` it matches}), whose scores are listed."""
    low, high = band
    required = f"every configuration mean in [{low:g}, {high:g}]"
    skipped = means[config].isin([c for found in exempt.values() for c in found])
    unmatched = [entry for entry, found in exempt.items() if not found]
    if exempt:
        required += " except " + ", ".join(exempt)
    values = means.loc[~skipped].set_index(label)[accuracy]
    outside = values[(values < low) | (values > high)]
    observed = (f"means {values.min():.2f} to {values.max():.2f}" if len(values)
                else "no configuration judged")
    if len(outside):
        observed += "; outside: " + ", ".join(f"{k} {v:.2f}" for k, v in outside.items())
    if skipped.any():
        observed += "; exempt: " + ", ".join(
            f"{k} {v:.2f}" for k, v in means.loc[skipped].set_index(label)[accuracy].items())
    if unmatched:
        observed += "; exempt but matching no configuration: " + ", ".join(unmatched)
    return {"criterion": "accuracy band", "required": required, "observed": observed,
            "passed": bool(len(values)) and not len(outside)}


def plateau_row(rows: pd.DataFrame, label: str) -> dict[str, Any] | None:
    """Every seed must have left the plateau: a seed at a uniform guess's loss learned next to
    nothing, which no band on the means catches (one such seed in four can leave a mean inside
    the band). A trial the check cannot judge (no loss or class count recorded) fails it too, as
    an undetermined control does. None for a study none of whose trials can be judged (recorded
    before the check existed): the report notes it."""
    from mvlab.analysis.plateau import TOLERANCE, on_plateau, seed_text

    flags = on_plateau(rows)
    if not flags.notna().any():
        return None
    stuck = rows[flags.fillna(False).astype(bool)]
    key = SEED if SEED in rows else TRIAL
    parts = [f"{name} {key}{'s' * (len(group) > 1)} {', '.join(map(seed_text, group))}"
             for name, group in stuck.groupby(label, sort=False)[key]]
    observed = (f"{len(stuck)} of {int(flags.notna().sum())} judged trials: " + "; ".join(parts)
                if parts else "none")
    unjudged = int(flags.isna().sum())
    if unjudged:
        observed += (f"; {unjudged} trial(s) not judged (no training loss or class count "
                     "recorded)")
    return {"criterion": "every seed left the plateau",
            "required": f"last-epoch training loss below {1 - TOLERANCE:g} x ln K, every trial",
            "observed": observed, "passed": stuck.empty and not unjudged}


MIN_RELIABILITY_SEEDS = 4  # two a half: a half of one seed is one run's noise, not a mean


def reliability_row(reliability: pd.Series | None, threshold: float) -> dict[str, Any]:
    row = {"criterion": "split-half reliability", "required": f"r >= {threshold:g} "
           "(Spearman-Brown, all seeds)", "passed": False}
    if reliability is None:
        return {**row, "observed": "not computable (see the notes)"}
    r, low, high = (reliability[k] for k in ("r_full", "r_full_low", "r_full_high"))
    seeds = int(reliability["seeds"])
    observed = (f"{r:.2f} (95 % CI {low:.2f} to {high:.2f}), {int(reliability['configs'])} "
                f"configurations x {seeds} seeds")
    if seeds < MIN_RELIABILITY_SEEDS:
        return {**row, "observed": observed + f"; not judged below {MIN_RELIABILITY_SEEDS} "
                "seeds (a half of one seed: the split says nothing)"}
    if not reliability["reliable"] and math.isfinite(reliability["seeds_needed"]):
        observed += f"; about {int(reliability['seeds_needed'])} seeds would reach it"
    return {**row, "observed": observed, "passed": bool(reliability["reliable"])}


def evaluate_gate(gate: Mapping[str, Any], rows: pd.DataFrame, means: pd.DataFrame,
                  reliability: pd.Series | None,
                  configs_of: Callable[[Mapping[str, Any]], Sequence[str]], *, accuracy: str,
                  config: str, label: str, margin: float, threshold: float,
                  maximise: bool, alpha: float = 0.05, pooled: bool = False) -> pd.DataFrame:
    """One row per criterion (``COLUMNS``); ``attrs["passed"]`` is the gate's outcome.
    ``configs_of``: every configuration knob values name. A ``band_exempt`` entry exempts all
    of them; a control's side must name exactly one."""

    def config_of(point: Mapping[str, Any]) -> str | None:
        found = configs_of(point)
        return found[0] if len(found) == 1 else None

    exempt = {_knobs(point): list(configs_of(point)) for point in gate.get("band_exempt") or ()}
    found = control_rows(rows, gate.get("controls") or (), config_of, accuracy, config, margin,
                         maximise, alpha, pooled)
    if gate.get("band") is not None:
        found.append(band_row(means, gate["band"], accuracy, label, config, exempt))
    plateau = plateau_row(rows, label)
    if plateau is not None:
        found.append(plateau)
    if gate.get("reliability", True):
        found.append(reliability_row(reliability, threshold))
    table = pd.DataFrame(found, columns=COLUMNS)
    table.attrs["passed"] = bool(table["passed"].all())
    return table


def gate_lines(table: pd.DataFrame, markdown: Callable[[pd.DataFrame], str],
               filename: str) -> list[str]:
    """The report's section: the outcome first, then every criterion."""
    failed = table.loc[~table["passed"], "criterion"].tolist()
    head = ("PASSED: every criterion holds; rankings on this proxy may be read with their "
            "verdicts" if table.attrs["passed"] else
            f"NOT PASSED ({len(failed)} of {len(table)} criteria: {', '.join(failed)}): do not "
            "read rankings on this proxy as evidence")
    show = table.assign(passed=table["passed"].map({True: "yes", False: "no"}))
    return ["### Calibration gate", "", f"**{head}.** Controls are paired over seeds, "
            "Holm-adjusted across the controls (their own family: a pair that is also in the "
            "verdicts below may be judged differently there); undetermined is not a pass. "
            f"(`{filename}`)", "", markdown(show), ""]


def outcome_line(path: Path) -> str:
    """One line for the terminal from a written ``gate*.csv``."""
    table = pd.read_csv(path)
    failed = table.loc[~table["passed"].astype(bool), "criterion"].tolist()
    where = f" ({path.stem[len('gate_'):]})" if path.stem != "gate" else ""
    if not failed:
        return f"calibration gate{where}: PASSED ({len(table)} criteria)"
    return (f"calibration gate{where}: NOT PASSED ({len(failed)} of {len(table)} criteria: "
            f"{', '.join(failed)}); see the report's README.md")

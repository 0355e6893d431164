"""Analysis of sweeps: plain functions on pandas DataFrames (no torch, no model code).

Load a study with ``load_study``; then Pareto fronts (``pareto_mask``, ``pareto_table``), error
EDFs (``edf_table``), bootstrap ranges of knobs (``bootstrap_range``, ``bootstrap_win_share``),
seed noise (``seed_noise``), seeds that never left the plateau (``on_plateau``), verdicts
against a reference configuration over seeds (``compare_to_reference``, ``compare_pairs``,
``page_trend``), split-half reliability (``split_half``), and proxy validity
(``paired_fidelities``, ``fidelity_table``).
Figures live in ``mvlab.analysis.plots``. See docs/analysis.md."""
from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from mvlab.lazy import lazy_exports

# Public name -> submodule. Imported on first access (PEP 562): scipy.stats and pandas cost about
# a second, which a caller that wants one function (or only a submodule) should not pay.
_LAZY = {
    **dict.fromkeys(["best_value_draws", "bootstrap_range", "bootstrap_table",
                     "bootstrap_win_share"], "bootstrap"),
    **dict.fromkeys(["complexity_bins", "complexity_weights", "edf", "edf_table"], "edf"),
    "AnalysisError": "errors",
    **dict.fromkeys(["fidelity_table", "paired_fidelities", "rank_agreement",
                     "rank_agreement_ci", "top_k_overlap"], "fidelity"),
    **dict.fromkeys(["completed", "design_choices", "fidelity_levels", "find_storage",
                     "load_study", "objectives_of", "open_storage", "spec_fields",
                     "study_names", "with_spec_fields"], "load"),
    **dict.fromkeys(["noise_homogeneity", "pooled_std", "seed_noise", "seed_spread"], "noise"),
    **dict.fromkeys(["pareto_front", "pareto_mask", "pareto_ranks"], "pareto"),
    **dict.fromkeys(["on_plateau", "plateau_counts"], "plateau"),
    "split_half": "reliability",
    **dict.fromkeys(["choice_summary", "front_within_ci", "knob_label", "pareto_table",
                     "primary_knob", "seed_means", "with_error", "with_pareto"], "summary"),
    **dict.fromkeys(["compare_pairs", "compare_to_reference", "holm", "page_trend",
                     "seed_matrix"], "verdicts"),
}

if TYPE_CHECKING:
    from mvlab.analysis.bootstrap import (
        best_value_draws,
        bootstrap_range,
        bootstrap_table,
        bootstrap_win_share,
    )
    from mvlab.analysis.edf import complexity_bins, complexity_weights, edf, edf_table
    from mvlab.analysis.errors import AnalysisError
    from mvlab.analysis.fidelity import (
        fidelity_table,
        paired_fidelities,
        rank_agreement,
        rank_agreement_ci,
        top_k_overlap,
    )
    from mvlab.analysis.load import (
        completed,
        design_choices,
        fidelity_levels,
        find_storage,
        load_study,
        objectives_of,
        open_storage,
        spec_fields,
        study_names,
        with_spec_fields,
    )
    from mvlab.analysis.noise import noise_homogeneity, pooled_std, seed_noise, seed_spread
    from mvlab.analysis.pareto import pareto_front, pareto_mask, pareto_ranks
    from mvlab.analysis.plateau import on_plateau, plateau_counts
    from mvlab.analysis.reliability import split_half
    from mvlab.analysis.summary import (
        choice_summary,
        front_within_ci,
        knob_label,
        pareto_table,
        primary_knob,
        seed_means,
        with_error,
        with_pareto,
    )
    from mvlab.analysis.verdicts import (
        compare_pairs,
        compare_to_reference,
        holm,
        page_trend,
        seed_matrix,
    )

__all__ = [
    "AnalysisError", "best_value_draws", "bootstrap_range", "bootstrap_table",
    "bootstrap_win_share", "choice_summary", "compare_pairs", "compare_to_reference", "front_within_ci", "holm", "completed", "complexity_bins",
    "complexity_weights", "design_choices", "edf", "knob_label", "edf_table", "fidelity_levels",
    "fidelity_table", "find_storage", "load_study", "objectives_of", "open_storage",
    "noise_homogeneity", "on_plateau", "page_trend", "paired_fidelities", "pareto_front",
    "pareto_mask", "pareto_ranks", "pareto_table", "plateau_counts",
    "pooled_std", "primary_knob", "rank_agreement", "rank_agreement_ci", "seed_means",
    "seed_matrix", "seed_noise", "seed_spread", "spec_fields", "split_half", "study_names",
    "top_k_overlap", "with_error", "with_pareto", "with_spec_fields",
]


__getattr__, __dir__ = lazy_exports(globals(), {n: f".{m}" for n, m in _LAZY.items()})


class _Package(types.ModuleType):
    # ``edf`` is both a function and its submodule. Importing the submodule (plots.py does)
    # sets the package attribute to the module, which would hide the function; the eager
    # package kept the function there, so keep it that way.
    def __setattr__(self, name: str, value) -> None:
        if _LAZY.get(name) == name and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

"""Studies: the YAML schema, the search space, the Optuna runner, MLflow tracking and reports.

Public API::

    from mvlab.study import load_study, run_sweep, SweepOptions, build_report
    config = load_study("experiments/hybrid_patterns.yaml", ["train.epochs=1"])
    summary = run_sweep(config, SweepOptions(workers=2))

See docs/studies.md for the file format and what a sweep records. The names are imported on
first use: validating a study (``mvlab sweep --check``) needs neither torch nor MLflow."""
from __future__ import annotations

from mvlab.lazy import lazy_exports

_EXPORTS = {
    "load_study": "schema", "load_study_text": "schema",
    "StudyConfig": "types", "Dimension": "types", "TrialPlan": "types",
    "SweepOptions": "types", "SweepSummary": "types",
    "grid_points": "space", "population_points": "space", "resolve_point": "space",
    "prepare": "preparation", "work": "worker", "run_sweep": "runner",
    "build_report": "report",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(globals(), {n: f".{m}" for n, m in _EXPORTS.items()})

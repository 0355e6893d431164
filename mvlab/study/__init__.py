"""Studies: the YAML schema, the search space, the Optuna runner, MLflow tracking and reports.

Public API::

    from mvlab.study import load_study, run_sweep, SweepOptions, build_report
    config = load_study("experiments/hybrid_patterns.yaml", ["train.epochs=1"])
    summary = run_sweep(config, SweepOptions(workers=2))

See docs/studies.md for the file format and what a sweep records."""
from mvlab.study.report import build_report
from mvlab.study.runner import SweepOptions, SweepSummary, prepare, run_sweep, work
from mvlab.study.schema import Dimension, StudyConfig, load_study, load_study_text
from mvlab.study.space import TrialPlan, grid_points, population_points, resolve_point

__all__ = ["load_study", "load_study_text", "StudyConfig", "Dimension", "run_sweep",
           "SweepOptions", "SweepSummary", "prepare", "work", "build_report", "TrialPlan",
           "grid_points", "population_points", "resolve_point"]

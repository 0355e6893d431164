"""The names a sweep writes and the analysis reads, as the analysis has always imported them
(``from mvlab.analysis import names``). They are defined once, in ``mvlab.records``, which the
sweep imports too, so the two sides cannot drift apart."""
from __future__ import annotations

from mvlab.records import (
    ACCURACY_SCALE,
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_DB,
    FIDELITY,
    INIT_SEED,
    MACS,
    METRIC_PREFIX,
    MLFLOW_RUN_ID,
    NETWORK,
    ORDER_SEED,
    PARAM_PREFIX,
    PARAMS,
    REASON,
    SEED,
    SPEC,
    SPLIT_SEED,
    STATE,
    STATUS,
    STUDY_ANALYSIS,
    STUDY_EXPERIMENT,
    STUDY_KIND,
    STUDY_PARENT_RUN_ID,
    STUDY_SYNTHETIC,
    STUDY_TRACKING_URI,
    TRIAL,
)

__all__ = ["ACCURACY_SCALE", "DEFAULT_STORAGE", "DEFAULT_TRACKING_DB", "FIDELITY", "INIT_SEED",
           "MACS", "METRIC_PREFIX", "MLFLOW_RUN_ID", "NETWORK", "ORDER_SEED", "PARAM_PREFIX",
           "PARAMS", "REASON", "SEED", "SPEC", "SPLIT_SEED", "STATE", "STATUS", "STUDY_ANALYSIS",
           "STUDY_EXPERIMENT", "STUDY_KIND", "STUDY_PARENT_RUN_ID", "STUDY_SYNTHETIC",
           "STUDY_TRACKING_URI", "TRIAL"]

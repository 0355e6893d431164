"""The names a sweep writes and the analysis reads: one place, so the two sides cannot drift.

``mvlab.study`` records each trial in Optuna (user attributes below, objectives named with
``study.set_metric_names``) and in MLflow (one child run per trial under one parent run per
sweep). ``mvlab.analysis.load_study`` turns that record into one DataFrame whose columns carry the
same names. Objective columns are named by the study's metric names."""
from __future__ import annotations

# Optuna trial user attributes, each a top-level column of the loaded table.
SPEC = "spec"                  # canonical grammar string of the trained model
SEED = "seed"                  # the trial's seed: a replicate (the three roles below)
INIT_SEED = "init_seed"        # initialisation, dropout, mixup (train.seed)
ORDER_SEED = "order_seed"      # training order and augmentation (data.order_seed)
SPLIT_SEED = "split_seed"      # subset and held-out split (data.seed): fixed per study
NETWORK = "network"            # grammar.network_spec: duplicate points of one network share it
FIDELITY = "fidelity"          # label of the training budget, e.g. "epochs=2" or "res=32"
MLFLOW_RUN_ID = "mlflow_run_id"  # the trial's MLflow child run
STATUS = "status"              # "ok" | "failed" (TrainResult.status)
REASON = "reason"              # why a failed trial failed
PARAMS = "params"              # parameter count (analytic)
MACS = "macs"                  # multiply-accumulates per image at the trained resolution

# Optuna study user attributes.
STUDY_KIND = "kind"            # "population" (random/QMC/grid) or "optimisation" (TPE/NSGA-II)
STUDY_TRACKING_URI = "mlflow_tracking_uri"
STUDY_EXPERIMENT = "mlflow_experiment"
STUDY_PARENT_RUN_ID = "mlflow_parent_run_id"
STUDY_ANALYSIS = "analysis"    # the study file's analysis settings: reference, margin, ...
STUDY_SYNTHETIC = "synthetic"  # True only for made-up studies (tests, demos)

# Accuracies (heldout_top1, val_top1, ...) are percentages, as mvlab.train reports them.
ACCURACY_SCALE = 100.0

# Where ``mvlab sweep`` keeps a study by default (its ``workdir``), relative to where it ran.
DEFAULT_STORAGE = "studies/{study}/optuna.journal"
DEFAULT_TRACKING_DB = "studies/{study}/mlflow.db"

# Columns the loader adds.
TRIAL = "trial"                # Optuna trial number
STATE = "state"                # Optuna state: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
PARAM_PREFIX = "params."       # Optuna's sampled knobs: "params.pattern", "params.s3.depth"
METRIC_PREFIX = "metrics."     # final MLflow metrics of the trial's run

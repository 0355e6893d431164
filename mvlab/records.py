"""The names of a study's record, shared by the sweep that writes it and the analysis that reads it.

``mvlab.study`` records each trial in Optuna (the trial user attributes below; objectives named
with ``study.set_metric_names``) and in MLflow (a child run per trial under one parent run per
study). ``mvlab.analysis.load_study`` turns that record into a DataFrame whose columns carry the
same names. Both sides import them from here: a name spelled twice drifts (the analysis once
read journal files the sweep refused to write).

Torch-, Optuna- and MLflow-free: ``mvlab sweep --check`` and the analysis import it. The stored
strings are a file format: existing journals and ``results/`` must stay readable, so a value
here changes only with a migration."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------------- metrics
# What a trial can report (its objectives and MLflow metrics). Accuracies are percentages.
HELDOUT_TOP1, HELDOUT_TOP5 = "heldout_top1", "heldout_top5"
VAL_TOP1, VAL_TOP5 = "val_top1", "val_top5"
THROUGHPUT, LATENCY_MS = "throughput", "latency_ms"  # the bench: images/s, ms per batch
PARAMS, MACS = "params", "macs"  # analytic: parameter count, MACs per image (scan excluded)
MACS_WITH_SCAN = "macs_with_scan"
EMA_HELDOUT_TOP1 = "ema_heldout_top1"  # per-epoch metric of the EMA weights, when trained with EMA
ACCURACY_METRICS = (HELDOUT_TOP1, HELDOUT_TOP5, VAL_TOP1, VAL_TOP5)
# Known before training: the early-stop rule compares trials on these.
PRE_TRAINING_METRICS = (THROUGHPUT, LATENCY_MS, PARAMS, MACS)
METRICS = ACCURACY_METRICS + PRE_TRAINING_METRICS
MAXIMIZE, MINIMIZE = "maximize", "minimize"
DEFAULT_OBJECTIVES: tuple[tuple[str, str], ...] = ((HELDOUT_TOP1, MAXIMIZE), (THROUGHPUT, MAXIMIZE))
ACCURACY_SCALE = 100.0  # accuracies are percentages, as the trainer reports them

# -------------------------------------------------------------------- trial user attributes
# Optuna trial user attributes; each is a top-level column of the loaded table.
SPEC = "spec"                  # canonical grammar string of the trained model
SEED = "seed"                  # the trial's seed: a replicate (the three roles below)
INIT_SEED = "init_seed"        # initialisation, dropout, mixup (train.seed)
ORDER_SEED = "order_seed"      # training order and augmentation (data.order_seed)
SPLIT_SEED = "split_seed"      # subset and held-out split (data.seed): fixed per study
EARLY_INIT_SEED = "early_init_seed"  # stem + first stages (train.early_init_seed), when set
NETWORK = "network"            # grammar.network_spec: duplicate points of one network share it
FIDELITY = "fidelity"          # the training budget in words: ``fidelity_label``
MLFLOW_RUN_ID = "mlflow_run_id"  # the trial's MLflow child run
STATUS = "status"              # STATUS_OK | STATUS_FAILED | STATUS_PRUNED
REASON = "reason"              # why a failed or pruned trial ended
EARLY_HELDOUT_TOP1 = "early_heldout_top1"  # held-out top-1 at early_stop.after_epoch
NUM_CLASSES = "num_classes"    # classes the trial trained on: a uniform guess's loss is ln K
TRAIN_LOSS = "train_loss"      # mean training loss of the last epoch (also an MLflow series)
TRAIN_LOSSES = "train_losses"  # mean training loss of every epoch: when the plateau was left
STAGE_EPOCHS = "stage_epochs"  # epochs trained on data.curriculum's stages, not on the task
# (THROUGHPUT, LATENCY_MS, PARAMS and MACS are trial user attributes too.)
STATUS_OK, STATUS_FAILED, STATUS_PRUNED = "ok", "failed", "pruned"
# Who runs a trial (mvlab.study.storage): the staleness check reads these.
HOST, PID, PID_START, HEARTBEAT = "host", "pid", "pid_start", "heartbeat"
REQUEUE = "requeue"            # failed for a reason outside the trial: queued again

# -------------------------------------------------------------------- study user attributes
STUDY_KIND = "kind"            # KIND_POPULATION (grid/random/QMC) or KIND_OPTIMISATION
STUDY_KIND_EXACT = "study_kind"  # the study file's kind: grid, population or optimize
KIND_POPULATION, KIND_OPTIMISATION = "population", "optimisation"
STUDY_TRACKING_URI = "mlflow_tracking_uri"
STUDY_EXPERIMENT = "mlflow_experiment"
STUDY_PARENT_RUN_ID = "mlflow_parent_run_id"
STUDY_ANALYSIS = "analysis"    # the study file's analysis settings: reference, margin, ...
STUDY_STAGES = "sequential_stages"  # seed stages a sequential study has added (each a look)
STUDY_CONFIG = "study_config"  # the settings a resumed sweep must not change (JSON)
STUDY_FIDELITY_HASH = "fidelity_hash"  # their hash
STUDY_SYNTHETIC = "synthetic"  # True only for made-up studies (tests, demos)


def analysis_kind(study_kind: str) -> str:
    """The coarse kind the analysis reads (``STUDY_KIND``) of a study file's ``kind``: an
    optimiser's trials are not a sample of the space, a grid's or population's are."""
    return KIND_OPTIMISATION if study_kind == "optimize" else KIND_POPULATION


# ------------------------------------------------------------------------------------ MLflow
# Tags and params of the runs (the parent run's tags say who ran the sweep: HOST, PID, ...).
TAG_STUDY, TAG_KIND = "study", "kind"
TAG_TRIAL_NUMBER = "trial_number"  # a child run's trial; also one of its params
TAG_FAIL_REASON = "fail_reason"
TAG_PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's own
PARAM_STUDY_KIND = "study_kind"

# ---------------------------------------------------------------------- points and columns
SEED_PARAM = SEED  # the seed is a dimension of every grid/population point (params.seed)
TRIAL = "trial"                # loader column: Optuna trial number
STATE = "state"                # loader column: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
DURATION_S = "duration_s"      # loader column: wall time of the trial
PARAM_PREFIX = "params."       # Optuna's sampled knobs: "params.pattern", "params.s3.depth"
METRIC_PREFIX = "metrics."     # final MLflow metrics of the trial's run
LABEL = "label"                # report column: the trial's varied knob values in words
# Knobs under these prefixes set the training budget, not the architecture.
BUDGET_PREFIXES = ("train.", "data.")


def point_label(params: Mapping[str, Any], skip: tuple[str, ...] = ()) -> str:
    """A point in words, ``pattern=last_half branch=off seed=1`` (keys in ``skip`` left out)."""
    return " ".join(f"{k}={v}" for k, v in params.items() if k not in skip)


def fidelity_label(epochs: int, resolution: int, per_class: int | None = None) -> str:
    """The training budget in words, e.g. ``epochs=3 res=32 per_class=200``; the analysis
    orders fidelities by these numbers and never averages two labels together."""
    words = [f"epochs={epochs}", f"res={resolution}"]
    if per_class:
        words.append(f"per_class={per_class}")
    return " ".join(words)


# ------------------------------------------------------------------------------ locations
WORKDIR = "studies/{study}"    # a study's folder, relative to where the sweep ran
JOURNAL_FILE = "optuna.journal"
TRACKING_DB_FILE = "mlflow.db"
DEFAULT_STORAGE = f"{WORKDIR}/{JOURNAL_FILE}"
DEFAULT_TRACKING_DB = f"{WORKDIR}/{TRACKING_DB_FILE}"
JOURNAL_PREFIX = "journal:"
JOURNAL_SUFFIXES = (".journal", ".log", ".jsonl")


def journal_path(url: str) -> Path | None:
    """The file of a journal storage (``journal:PATH``, or a path ending in one of
    ``JOURNAL_SUFFIXES``), None for database URLs. ``journal://PATH`` reads as ``PATH``."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX):].removeprefix("//")).expanduser()
    if "://" not in url and url.endswith(JOURNAL_SUFFIXES):
        return Path(url).expanduser()
    return None

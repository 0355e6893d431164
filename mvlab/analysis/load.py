"""A sweep's record (Optuna storage + MLflow runs) as one pandas DataFrame, one row per trial.

Columns: ``trial``, ``state``, one column per objective (named by the study's metric names),
``params.<knob>`` for every sampled knob, the trial's scalar user attributes (``spec``, ``seed``,
``fidelity``, ``mlflow_run_id``, ``status``, ``params``, ``macs``, ...; see ``mvlab.records``), and,
when the MLflow store is reachable, ``metrics.<name>`` from the trial's run. ``df.attrs`` holds
``objectives`` ({column: "maximize" | "minimize"}), ``study`` and ``study_attrs``."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from mvlab import records
from mvlab.analysis.errors import AnalysisError


def open_storage(storage, must_exist: bool = True):
    """An Optuna storage for a URL (sqlite:///, postgresql://) or a journal file.

    ``journal:PATH`` or a path ending in .journal/.log/.jsonl opens a JournalStorage (what
    ``mvlab sweep`` writes by default: ``studies/<name>/optuna.journal``). Storage objects pass
    through unchanged."""
    if not isinstance(storage, (str, Path)):
        return storage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    text = str(storage)
    path = records.journal_path(text)  # the sweep's own reading of a storage URL
    if path is None:
        return text
    if must_exist and not path.exists():
        raise AnalysisError(f"journal storage {str(path)!r} does not exist; pass the file the "
                            f"sweep wrote (default: "
                            f"{records.DEFAULT_STORAGE.format(study='<name>')})")
    # The same lock as mvlab.study's writers, so reading a running sweep is safe on NFS too.
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def find_storage(study: str, start: str | Path | None = None) -> str:
    """The storage of ``study``: ``$MVLAB_STORAGE`` if set, else the default journal file
    ``studies/<study>/optuna.journal`` in ``start`` (default: the working directory) or the
    nearest parent that has it, so a notebook finds a sweep run from the repository root."""
    import os

    if os.environ.get("MVLAB_STORAGE"):
        return os.environ["MVLAB_STORAGE"]
    relative = records.DEFAULT_STORAGE.format(study=study)
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / relative).exists():
            return str(folder / relative)
    raise AnalysisError(f"no {relative} in {here} or its parents; run `mvlab sweep` for study "
                        f"{study!r} first, or set MVLAB_STORAGE to its storage (a journal file, "
                        "sqlite:/// or postgresql:// URL)")


def fidelity_levels(df: pd.DataFrame, column: str = records.FIDELITY) -> list[str]:
    """The distinct fidelity labels, cheapest first (ordered by the numbers in each label, so
    "epochs=1 res=32" comes before "epochs=4 res=32")."""
    import re

    if column not in df.columns:
        raise AnalysisError(f"the table has no {column!r} column")
    labels = df[column].dropna().astype(str).unique().tolist()
    return sorted(labels, key=lambda label: ([float(n) for n in re.findall(r"\d+\.?\d*", label)],
                                             label))


def study_names(storage: str | Path) -> list[str]:
    """Names of the studies in ``storage``."""
    import optuna

    return sorted(optuna.get_all_study_names(storage=open_storage(storage)))


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def study_objectives(study) -> dict[str, str]:
    """{objective name: "maximize" | "minimize"} of an Optuna study, named by its metric names
    (Optuna's own ``value`` / ``objective_<i>`` when the study has none)."""
    metric_names = study.metric_names or (
        ["value"] if len(study.directions) == 1
        else [f"objective_{i}" for i in range(len(study.directions))])
    return {name: direction.name.lower()
            for name, direction in zip(metric_names, study.directions, strict=True)}


def _trial_row(trial, objectives: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {records.TRIAL: trial.number, records.STATE: trial.state.name}
    for key, value in trial.user_attrs.items():
        row[key] = _scalar(value)
    for key, value in trial.params.items():
        row[records.PARAM_PREFIX + key] = value
    values = trial.values or [math.nan] * len(objectives)
    for name, value in zip(objectives, values, strict=True):
        row[name] = value
    if trial.datetime_start and trial.datetime_complete:
        row[records.DURATION_S] = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return row


def _mlflow_metrics(run_ids: list[str], tracking_uri: str) -> pd.DataFrame:
    """Final metrics of the given MLflow runs, indexed by run id (missing runs are skipped)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    rows = {}
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            continue  # a trial whose run was deleted keeps its Optuna record
        rows[run_id] = {records.METRIC_PREFIX + k: v for k, v in run.data.metrics.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def load_study(study: str, storage: str | Path, tracking_uri: str | None = None,
               mlflow: bool = True) -> pd.DataFrame:
    """Load Optuna study ``study`` from ``storage`` (joined with MLflow metrics) into a DataFrame.

    ``tracking_uri`` defaults to the one the sweep recorded on the study; with none, or with
    ``mlflow=False``, the table holds the Optuna record only."""
    import optuna

    resolved = open_storage(storage)
    try:
        record = optuna.load_study(study_name=study, storage=resolved)
    except KeyError as exc:
        available = optuna.get_all_study_names(storage=resolved)
        raise AnalysisError(f"no study named {study!r} in {storage}; it holds "
                            f"{sorted(available) or 'no studies'}") from exc
    objectives = study_objectives(record)
    rows = [_trial_row(t, objectives) for t in record.get_trials(deepcopy=False)]
    table = pd.DataFrame(rows)
    if table.empty:
        table = pd.DataFrame(columns=[records.TRIAL, records.STATE, *objectives])
    uri = tracking_uri or record.user_attrs.get(records.STUDY_TRACKING_URI)
    if mlflow and uri and records.MLFLOW_RUN_ID in table.columns:
        run_ids = table[records.MLFLOW_RUN_ID].dropna().astype(str).unique().tolist()
        metrics = _mlflow_metrics(run_ids, uri)
        if not metrics.empty:
            table = table.join(metrics, on=records.MLFLOW_RUN_ID)
    table.attrs.update(objectives=objectives, study=study, study_attrs=dict(record.user_attrs))
    return table


def completed(df: pd.DataFrame) -> pd.DataFrame:
    """Trials that finished and trained: state COMPLETE and status not "failed"."""
    keep = df[records.STATE] == "COMPLETE"
    if records.STATUS in df.columns:
        keep &= df[records.STATUS].fillna(records.STATUS_OK) != records.STATUS_FAILED
    result = df[keep].copy()
    result.attrs = dict(df.attrs)
    return result


def design_choices(df: pd.DataFrame, include_seed: bool = False) -> list[str]:
    """The ``params.*`` columns that take more than one value: the knobs a study varied.

    The seed (``params.seed``, a grid dimension of every sweep) is not a design choice unless
    ``include_seed``."""
    seed = records.PARAM_PREFIX + records.SEED_PARAM
    return [c for c in df.columns if str(c).startswith(records.PARAM_PREFIX)
            and (include_seed or c != seed) and df[c].nunique(dropna=True) > 1]


def architecture_choices(df: pd.DataFrame) -> list[str]:
    """The varied knobs other than the training budget (``params.train.*``, ``params.data.*``)."""
    budget = tuple(records.PARAM_PREFIX + prefix for prefix in records.BUDGET_PREFIXES)
    return [c for c in design_choices(df) if not str(c).startswith(budget)]


def objectives_of(df: pd.DataFrame) -> dict[str, str]:
    """The objectives ({column: direction}) a loaded table carries in ``df.attrs``."""
    objectives = df.attrs.get("objectives")
    if not objectives:
        raise AnalysisError("the table carries no objectives; load it with load_study or pass "
                            "objectives={'column': 'maximize' | 'minimize'} explicitly")
    return dict(objectives)


def spec_fields(spec: str) -> dict[str, str]:
    """The key=value words of a canonical spec string: global keys as-is, stage keys as s1.key.

    A plain-text reading of the grammar's canonical form, so the analysis needs no model code."""
    fields: dict[str, str] = {}
    for index, segment in enumerate(str(spec).split("|")):
        for word in segment.split():
            key, sep, value = word.partition("=")
            if sep:
                fields[key if index == 0 else f"s{index}.{key}"] = value
    return fields


def with_spec_fields(df: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
    """``df`` plus a ``spec.<key>`` column for each spec field (all varying ones by default)."""
    if records.SPEC not in df.columns:
        raise AnalysisError(f"the table has no {records.SPEC!r} column to read spec fields from")
    fields = pd.DataFrame([spec_fields(s) if isinstance(s, str) else {} for s in df[records.SPEC]],
                          index=df.index)
    if keys is None:
        keys = [c for c in fields.columns if fields[c].nunique(dropna=True) > 1]
    missing = [k for k in keys if k not in fields.columns]
    if missing:
        raise AnalysisError(f"spec fields {missing} are in no spec; available: "
                            f"{sorted(fields.columns)}")
    result = df.join(fields[keys].add_prefix("spec."))
    result.attrs = dict(df.attrs)
    return result

"""MLflow records of a study: one experiment per study, one parent run per study (every
``mvlab sweep`` of it reopens it), a child run per trial.

Everything goes through an explicit ``MlflowClient`` (no global active run), so worker
processes can write child runs of the parent that the main process opened. The default backend
is MLflow's own default, SQLite: ``<workdir>/mlflow.db`` with artifacts in
``<workdir>/mlartifacts``; ``mlflow ui --backend-store-uri sqlite:///<workdir>/mlflow.db`` shows
the sweep. ``prepare_tracking`` must run once before workers start: creating a fresh SQLite
schema from several processes at once races."""
from __future__ import annotations

import json
import logging
import math
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from mvlab import records
from mvlab.errors import StudyError
from mvlab.safety import mask_credentials
from mvlab.study.interrupts import deferred_interrupts
from mvlab.study.locations import (
    check_storage_folder,
    check_writable_folder,
    default_tracking_uri,
    storage_url_for,
    tracking_uri_for,
)
from mvlab.study.types import StudyConfig, TrackingTarget

__all__ = ["TrackingTarget", "TrialRun", "default_tracking_uri", "prepare_tracking",
           "set_trials_view", "trials_view_url", "check_reachable", "check_locations", "start_parent_run",
           "close_run", "end_run", "running_runs", "set_run_tags", "log_parent_metrics",
           "log_artifacts", "flatten"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# MLflow caps a param value at 6000 characters; a spec string is far below that.
_PARAM_LIMIT = 6000

# Experiment tags the MLflow 3 UI reads: the experiment's kind ("Machine learning" rather than
# GenAI), its description, and stored runs-table views (opened by ``viewStateShareKey``).
EXPERIMENT_KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"
SHARED_VIEW_TAG, TRIALS_VIEW = "mlflow.sharedViewState.", "trials"


CONNECT_TIMEOUT_S = 5.0  # a server on the same network answers in milliseconds


# The request MLflow's client makes first (``get_experiment_by_name``): a tracking server answers
# it with JSON (the experiment, or error_code RESOURCE_DOES_NOT_EXIST with HTTP 404); another web
# server answers 404 with a page of its own.
PROBE_PATH = "/api/2.0/mlflow/experiments/get-by-name"


def check_reachable(uri: str, timeout_s: float = CONNECT_TIMEOUT_S, create: bool = True) -> None:
    """StudyError within ``timeout_s`` when an MLflow server does not accept connections or is a
    web server that is not MLflow, or a local store's folder cannot be written (``create=False``,
    ``--check``: nor created). The sweep runs this before its prepare lock: MLflow's own client
    retries a refused connection for minutes, holding the lock every other worker waits on."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        try:
            host, port = parts.hostname, parts.port or (443 if scheme == "https" else 80)
        except ValueError:  # a port that is not a number
            host, port = None, None
        if not host or not port:
            raise StudyError(f"tracking.uri {scheme}://{parts.netloc.rpartition('@')[2]}: "
                             f"needs a host and a port, e.g. http://mlflow-host:5000")
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            if isinstance(exc, TimeoutError | socket.timeout):
                reason = f"no answer in {timeout_s:g} s"
            raise StudyError(f"tracking.uri {scheme}://{host}:{port}: cannot connect "
                             f"({reason}); start the MLflow server or fix tracking.uri") from None
        _check_is_mlflow(uri, timeout_s)
    elif scheme == "sqlite" and parts.path not in ("", "/", "/:memory:"):
        path = Path(uri.split(":///", 1)[-1])
        check_writable_folder(path.parent, f"tracking.uri {uri}", create)
    elif scheme in ("", "file") and parts.path:
        check_writable_folder(Path(parts.path), f"tracking.uri {uri}", create)


def not_mlflow_error(uri: str, status: int | str = 404) -> StudyError:
    """The one line for a tracking.uri whose server answers, but not as MLflow."""
    return StudyError(f"tracking.uri {mask_credentials(uri)}: the server there is not an MLflow "
                      f"tracking server (HTTP {status} on {PROBE_PATH}); point tracking.uri at "
                      f"`mlflow server`'s address (http://HOST:5000, with any path prefix it "
                      f"serves under), or drop it for the study's local store")


def _check_is_mlflow(uri: str, timeout_s: float) -> None:
    """StudyError when the server at ``uri`` answers MLflow's first request with a 404 that is
    not MLflow's JSON: some other web server (a wrong port or path). Anything else (MLflow's
    answers, refusals by a proxy asking for credentials, time-outs) is left to MLflow's client."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlencode, urlsplit, urlunsplit

    parts = urlsplit(uri)
    # Without user:password: urllib would not send them anyway, and they must not be logged.
    netloc = parts.netloc.rpartition("@")[2]
    probe = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + PROBE_PATH,
                        urlencode({"experiment_name": "mvlab-probe"}), ""))
    try:
        with urllib.request.urlopen(probe, timeout=timeout_s):
            return
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            return
        try:
            body = json.loads(exc.read(65_536) or b"null")
        except (ValueError, OSError):
            body = None
        if isinstance(body, dict) and "error_code" in body:
            return  # MLflow's own "no such experiment"
        raise not_mlflow_error(uri, exc.code) from None
    except (OSError, ValueError):
        return  # time-outs, TLS trouble: MLflow's client reports those in its own words


def check_locations(config: StudyConfig, storage: str | None = None) -> None:
    """``mvlab sweep --check``'s share of the sweep's own checks of where records go: the
    storage's scheme and folder, and the MLflow server answering as MLflow (seconds at most) or
    the local store's folder. Creates nothing; opens neither store."""
    check_storage_folder(storage_url_for(config, storage), create=False)
    check_reachable(tracking_uri_for(config), create=False)


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _retry(action: Callable[[], T], what: str, attempts: int = 5) -> T:
    """SQLite under several writers can answer 'database is locked'; wait and retry. A Ctrl-C
    waits for the write to finish (``deferred_interrupts``)."""
    for attempt in range(attempts):
        try:
            with deferred_interrupts():
                return action()
        except Exception as exc:  # MlflowException wraps the driver's OperationalError
            if attempt == attempts - 1 or "locked" not in str(exc).lower():
                raise
            log.debug("mlflow %s: %s; retrying", what, exc)
            time.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


def prepare_tracking(uri: str, experiment: str, artifact_root: Path | None,
                     description: str = "") -> str:
    """Create the backend (schema) and the experiment once, label it as a model-training
    experiment with the study's description (on resumed ones too); returns the experiment id."""
    client = _client(uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as exc:  # MlflowException from the REST client or the SQL store
        text = str(exc)
        if "404" in text and "mlflow" in text.lower() and "<" in text:
            raise not_mlflow_error(uri) from None  # an HTML page: a web server, not MLflow
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise StudyError(mask_credentials(f"tracking.uri {uri}: MLflow could not look up "
                                          f"experiment {experiment!r} ({first[:300]}); check "
                                          f"that it is an MLflow tracking store")) from None
    if found is not None:
        experiment_id = found.experiment_id
    else:
        experiment_id = _create_experiment(client, experiment, artifact_root)
    labels = {EXPERIMENT_KIND_TAG: TRAINING_KIND}
    if description.strip():
        labels[NOTE_TAG] = description.strip()
    current = found.tags if found is not None else {}
    for key, value in labels.items():
        if current.get(key) != value:
            _retry(lambda k=key, v=value: client.set_experiment_tag(experiment_id, k, v),
                   "set_experiment_tag")
    return experiment_id


def _create_experiment(client: Any, experiment: str, artifact_root: Path | None) -> str:
    location = artifact_root.resolve().as_uri() if artifact_root is not None else None
    if artifact_root is not None:
        artifact_root.mkdir(parents=True, exist_ok=True)
    try:
        return client.create_experiment(experiment, artifact_location=location)
    except Exception:  # another host created it first (RESOURCE_ALREADY_EXISTS on a server)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


def set_trials_view(uri: str, experiment_id: str, objectives: list[tuple[str, str]],
                    knobs: list[str]) -> None:
    """Store the runs-table view that compares trials (``trials_view_url`` opens it): the
    objectives as metric columns and the design knobs as param columns, sorted best first
    by the first objective. Sorting by a metric also lists the child runs flat, where the
    default view folds them under their parent's row."""
    first, direction = objectives[0]
    columns = [_column("metrics", name) for name, _ in objectives]
    columns += [_column("params", key) for key in [*knobs, records.SEED_PARAM]]
    view = {"orderByKey": _column("metrics", first), "orderByAsc": direction == "minimize",
            "selectedColumns": [*dict.fromkeys(columns), _column("attributes", "Duration")],
            "runsHiddenMode": "SHOW_ALL",  # every trial in the charts, not the first ten
            **_objective_charts([name for name, _ in objectives])}
    _retry(lambda: _client(uri).set_experiment_tag(
        experiment_id, SHARED_VIEW_TAG + TRIALS_VIEW, json.dumps(view)), "set_experiment_tag")


def trials_view_url(server: str, experiment_id: str) -> str:
    """The MLflow UI page of the experiment's trials. ``workflowType`` picks the UI's "Model
    training" side: MLflow 3.17 lands on the GenAI overview otherwise, whatever the
    experiment's kind tag says."""
    return (f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType="
            f"machine_learning&viewStateShareKey={TRIALS_VIEW}")


def _objective_charts(names: list[str]) -> dict[str, Any]:
    """The chart view's one section, "Objectives": the first two objectives against each other
    (each trial a point: the front) and a bar chart per objective. Charts of other metrics are
    a click away (Add chart)."""
    section = "mvlab-objectives"
    card = {"runsCountToCompare": 100, "metricSectionId": section, "deleted": False,
            "isGenerated": False}
    charts = []
    if len(names) >= 2:
        charts.append({**card, "uuid": "mvlab-front", "type": "SCATTER",
                       "displayName": f"{names[0]} vs {names[1]}",
                       "xaxis": {"key": names[0], "type": "METRIC"},
                       "yaxis": {"key": names[1], "type": "METRIC"}})
    charts += [{**card, "uuid": f"mvlab-{name}", "type": "BAR", "metricKey": name,
                "displayName": name} for name in names]
    return {"compareRunCharts": charts,
            "compareRunSections": [{"uuid": section, "name": "Objectives", "display": True,
                                    "isReordered": False, "deleted": False,
                                    "isGenerated": False}]}


def _column(kind: str, key: str) -> str:
    """A runs-table column as the MLflow UI names it."""
    return f"{kind}.`{key}`"


def running_runs(uri: str, experiment_id: str) -> list[Any]:
    """Runs of the experiment MLflow still shows as RUNNING."""
    client = _client(uri)
    return _retry(lambda: client.search_runs([experiment_id], "attributes.status = 'RUNNING'",
                                             max_results=10_000), "search_runs")


def close_run(uri: str, run_id: str, status: str, reason: str | None = None) -> None:
    """End a run another process left open: ``status`` FINISHED/FAILED/KILLED, the reason in
    tag ``fail_reason``."""
    client = _client(uri)
    if reason:
        _retry(lambda: client.set_tag(run_id, records.TAG_FAIL_REASON, _text(reason)), "set_tag")
    end_run(uri, run_id, status)


def start_parent_run(uri: str, experiment_id: str, name: str, tags: dict[str, str],
                     params: dict[str, Any], resume: str | None = None) -> str:
    """Open the study's parent run; returns its id. ``resume``: the id of the parent an
    earlier sweep of the study opened; it is reopened (RUNNING, this sweep's tags, the params
    it lacks) when it still exists in this experiment, so a study keeps one parent run."""
    client = _client(uri)
    tags = {k: _text(v) for k, v in tags.items()}
    previous = _live_run(client, resume, experiment_id) if resume else None
    if previous is None:
        run = _retry(lambda: client.create_run(experiment_id, run_name=name, tags=tags),
                     "create_run")
        _log_params(client, run.info.run_id, params)
        return run.info.run_id
    run_id = previous.info.run_id
    _retry(lambda: client.update_run(run_id, status="RUNNING"), "update_run")
    set_run_tags(uri, run_id, tags)
    # MLflow refuses to change a logged param: the first sweep's values stay.
    _log_params(client, run_id, {k: v for k, v in params.items()
                                 if k not in previous.data.params})
    return run_id


def _live_run(client: Any, run_id: str, experiment_id: str) -> Any:
    """The run, if it exists, belongs to the experiment and is not deleted; else None."""
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - deleted for good, or another tracking store
        return None
    if run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        return None
    return run


def set_run_tags(uri: str, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, _text(v)) for k, v in tags.items()]
    _retry(lambda: _client(uri).log_batch(run_id, tags=items), "set_tags")


def end_run(uri: str, run_id: str, status: str) -> None:
    """``status``: FINISHED, FAILED or KILLED."""
    _retry(lambda: _client(uri).set_terminated(run_id, status=status), "set_terminated")


def log_parent_metrics(uri: str, run_id: str, metrics: dict[str, float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    _retry(lambda: _client(uri).log_batch(run_id, metrics=items), "log_metrics")


def log_artifacts(uri: str, run_id: str, paths: Iterable[Path], artifact_path: str | None = None
                  ) -> None:
    client = _client(uri)
    for path in paths:
        _retry(lambda p=path: client.log_artifact(run_id, str(p), artifact_path), "log_artifact")


class TrialRun:
    """The child run of one trial: params up front, metrics per epoch, a final status."""

    def __init__(self, target: TrackingTarget, trial_number: int, run_name: str,
                 tags: dict[str, str]):
        self.uri = target.uri
        self.client = _client(target.uri)
        all_tags = {records.TAG_TRIAL_NUMBER: str(trial_number), **tags}
        if target.parent_run_id:
            all_tags[records.TAG_PARENT_RUN_ID] = target.parent_run_id
        all_tags = {k: _text(v) for k, v in all_tags.items()}
        run = _retry(lambda: self.client.create_run(target.experiment_id, run_name=run_name,
                                                    tags=all_tags), "create_run")
        self.run_id: str = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        _log_params(self.client, self.run_id, params)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)
                 and math.isfinite(float(v))]
        if items:
            _retry(lambda: self.client.log_batch(self.run_id, metrics=items), "log_metrics")

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, _text(v)) for k, v in tags.items()]
        _retry(lambda: self.client.log_batch(self.run_id, tags=items), "set_tags")

    def log_json(self, payload: Any, name: str) -> None:
        _retry(lambda: self.client.log_dict(self.run_id, _jsonable(payload), name), "log_dict")

    def log_text(self, text: str, name: str) -> None:
        _retry(lambda: self.client.log_text(self.run_id, text, name), "log_text")

    def finish(self, status: str, reason: str | None = None) -> None:
        """``status``: FINISHED, FAILED or KILLED; the reason lands in tag ``fail_reason``."""
        if reason:
            self.set_tags({records.TAG_FAIL_REASON: reason})
        end_run(self.uri, self.run_id, status)


def _log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, _param_text(v)) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow's log_batch takes at most 100 params
        chunk = items[start:start + 100]
        _retry(lambda c=chunk: client.log_batch(run_id, params=c), "log_params")


def _param_text(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(_jsonable(value), sort_keys=True)
    return _text(value)


def _text(value: Any) -> str:
    """A param or tag value as MLflow stores it: a password in any URL masked (a study's MLflow
    may be a server other people read), at most 6000 characters."""
    return mask_credentials(str(value))[:_PARAM_LIMIT]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def flatten(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """``{"lr": 1e-3}`` -> ``{"train.lr": 1e-3}``."""
    return {f"{prefix}.{k}": v for k, v in values.items()}

"""A made-up study, written through the same Optuna and MLflow calls and names as a real sweep.

For tests and for trying the notebooks without training anything. The study is marked
``synthetic=True`` in its user attributes and every notebook says so when it sees that flag.
Accuracy follows a fixed per-pattern effect plus seed noise, so the numbers mean nothing."""
from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np

from mvlab.analysis import names

PATTERNS = ("last_half", "first_half", "interleave", "mamba_only", "attn_only")
_PATTERN_EFFECT = {"last_half": 0.04, "first_half": 0.0, "interleave": 0.02,
                   "mamba_only": -0.03, "attn_only": 0.01}
OBJECTIVES = {"heldout_top1": "maximize", "throughput": "maximize"}


def _spec(pattern: str, d_state: int, conv1d: str, width: int) -> str:
    mixer = f"heads=2 window=none d_state={d_state} d_conv=3 expand=1 branch=on " \
            f"conv1d={conv1d} out=concat"
    return (f"stem=16 mlp=4 drop_path=0.1 layer_scale=none | depth=1 width={width} pattern=conv"
            f" | depth=1 width={2 * width} pattern=conv"
            f" | depth=4 width={4 * width} pattern={pattern} {mixer}"
            f" | depth=2 width={8 * width} pattern={pattern} {mixer}")


def write_synthetic_study(name: str, storage, tracking_uri: str | None = None,
                          patterns=PATTERNS, fidelities=("epochs=2", "epochs=6"),
                          d_states=(4, 8), conv1ds=("regular", "causal"), widths=(16, 24),
                          repeated_seeds: int = 3, seed: int = 0) -> None:
    """Write study ``name`` to Optuna ``storage`` (and MLflow at ``tracking_uri`` if given).

    Every pattern x d_state x conv1d x width configuration is trained at each fidelity with seed
    0; the first configuration of each pattern is repeated with ``repeated_seeds`` seeds. One
    trial fails and one is pruned, as in a real sweep. ``storage`` is an Optuna URL, a journal
    file path (created if missing) or a storage object."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    from mvlab.analysis.load import open_storage

    rng = np.random.default_rng(seed)
    knobs = {"pattern": list(patterns), "d_state": list(d_states), "conv1d": list(conv1ds),
             "width": list(widths)}
    distributions = {k: CategoricalDistribution(v) for k, v in knobs.items()}
    distributions["fidelity"] = CategoricalDistribution(list(fidelities))
    study = optuna.create_study(study_name=name, storage=open_storage(storage, must_exist=False),
                                directions=list(OBJECTIVES.values()))
    with warnings.catch_warnings():  # set_metric_names is "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(OBJECTIVES))
    study.set_user_attr(names.STUDY_KIND, "population")
    study.set_user_attr(names.STUDY_SYNTHETIC, True)
    client, parent = _mlflow_parent(name, tracking_uri)
    if tracking_uri:
        study.set_user_attr(names.STUDY_TRACKING_URI, tracking_uri)
        study.set_user_attr(names.STUDY_EXPERIMENT, name)
        study.set_user_attr(names.STUDY_PARENT_RUN_ID, parent.info.run_id)
    configs = list(itertools.product(*knobs.values()))
    config_quality = {c: _PATTERN_EFFECT.get(c[0], 0.0) + 0.002 * c[1] + rng.normal(0, 0.01)
                      for c in configs}
    first_of_pattern = {c[0]: c for c in reversed(configs)}
    for config, fidelity in itertools.product(configs, fidelities):
        pattern, d_state, conv1d, width = config
        params = {"pattern": pattern, "d_state": d_state, "conv1d": conv1d, "width": width,
                  "fidelity": fidelity}
        epochs = int(str(fidelity).rpartition("=")[2] or 1)
        seeds = range(repeated_seeds) if first_of_pattern[pattern] == config else [0]
        for run_seed in seeds:
            accuracy = float(np.clip(0.55 + 0.04 * np.log(epochs) + config_quality[config]
                                     + rng.normal(0, 0.008), 0, 1))
            size = width * width * (64 if pattern == "attn_only" else 48) * (1 + d_state / 16)
            attrs = {names.SPEC: _spec(pattern, d_state, conv1d, width), names.SEED: run_seed,
                     names.FIDELITY: fidelity, names.STATUS: "ok", names.PARAMS: int(size),
                     names.MACS: int(size * 40)}
            values = [accuracy, float(2.0e7 / size * rng.uniform(0.95, 1.05))]
            _record(study, client, parent, params, distributions, attrs, values, epochs)
    failed = dict(zip(knobs, configs[-1], strict=True)) | {"fidelity": fidelities[0]}
    _record(study, client, parent, failed, distributions,
            {names.SPEC: _spec(*configs[-1]), names.SEED: 7,
             names.FIDELITY: fidelities[0], names.STATUS: "failed",
             names.REASON: "loss is nan at epoch 1, step 3"}, None, 1)
    study.add_trial(optuna.trial.create_trial(
        params=failed, distributions={k: distributions[k] for k in failed},
        state=optuna.trial.TrialState.PRUNED, user_attrs={names.SEED: 8}))
    if client is not None:
        client.set_terminated(parent.info.run_id)


def _mlflow_parent(name: str, tracking_uri: str | None):
    if not tracking_uri:
        return None, None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    experiment_id = (experiment.experiment_id if experiment
                     else client.create_experiment(name, artifact_location=_artifacts(tracking_uri)))
    return client, client.create_run(experiment_id, run_name=f"sweep {name}")


def _artifacts(tracking_uri: str) -> str | None:
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def _record(study, client, parent, params, distributions, attrs, values, epochs) -> None:
    import optuna
    from mlflow.entities import Metric, Param, RunTag

    if client is not None:
        run = client.create_run(parent.info.experiment_id,
                                tags={"mlflow.parentRunId": parent.info.run_id},
                                run_name=f"trial {len(study.trials)}")
        metrics = []
        if values is not None:
            for epoch in range(epochs):
                share = (epoch + 1) / epochs
                metrics.append(Metric("heldout_top1", values[0] * share, 0, epoch))
            metrics += [Metric("throughput", values[1], 0, epochs)]
        client.log_batch(run.info.run_id, metrics=metrics,
                         params=[Param(k, str(v)) for k, v in params.items()],
                         tags=[RunTag(names.SPEC, attrs[names.SPEC])])
        client.set_terminated(run.info.run_id, "FINISHED" if values else "FAILED")
        attrs = {**attrs, names.MLFLOW_RUN_ID: run.info.run_id}
    state = optuna.trial.TrialState.COMPLETE if values else optuna.trial.TrialState.FAIL
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                              values=values, user_attrs=attrs, state=state))

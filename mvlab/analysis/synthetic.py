"""A made-up study, written through the same Optuna and MLflow calls and names as a real sweep.

For tests and for trying the notebooks without training anything. The study is marked
``synthetic=True`` in its user attributes and every notebook says so when it sees that flag.
Accuracy is a fixed per-pattern effect plus noise, so the numbers mean nothing.

Like ``mvlab sweep`` on a grid, every point is a set of Optuna params (the knobs, the training
budget ``train.epochs`` and ``seed``), the trial's user attributes carry spec, seed, fidelity,
status, params, macs, the training losses (every epoch's, for the plateau check; a binary task)
and the MLflow run id, and each trial has a child run under one parent.

``effects_table`` makes a study with *known* effects (a table, no storage): each configuration's
accuracy is the reference's plus a set difference, on a seed block effect shared by all
configurations of a seed, plus independent noise; so a verdict can be checked against the truth."""
from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mvlab import records

PATTERNS = ("last_half", "first_half", "interleave", "mamba_only", "attn_only")
_PATTERN_EFFECT = {"last_half": 0.04, "first_half": 0.0, "interleave": 0.02,
                   "mamba_only": -0.03, "attn_only": 0.01}
OBJECTIVES = dict(records.DEFAULT_OBJECTIVES)
RESOLUTION = 32
NUM_CLASSES = 2


def effects_table(effects: dict[str, float], seeds: dict[str, int] | int = 8,
                  reference: str = "reference", base: float = 70.0, seed_sd: float = 1.0,
                  noise_sd: float = 0.2, fidelity: str = "epochs=5 res=32",
                  seed: int = 0) -> pd.DataFrame:
    """Long table (config, seed, fidelity, heldout_top1) of ``reference`` and every configuration
    in ``effects`` ({name: true difference in points}). ``seeds``: seeds per configuration (an
    int for all, or {name: count}; the reference runs the most). Seed ``s`` adds the same block
    effect (sd ``seed_sd``) to every configuration; each run adds its own noise (sd
    ``noise_sd``)."""
    counts = {name: seeds if isinstance(seeds, int) else seeds.get(name, max(seeds.values()))
              for name in [reference, *effects]}
    rng = np.random.default_rng(seed)
    block = rng.normal(0.0, seed_sd, size=max(counts.values()))
    rows = []
    for name, count in counts.items():
        for run_seed in range(count):
            value = base + effects.get(name, 0.0) + block[run_seed] + rng.normal(0.0, noise_sd)
            rows.append({"config": name, records.SEED: run_seed, records.FIDELITY: fidelity,
                         records.HELDOUT_TOP1: value})
    return pd.DataFrame(rows)


def _spec(pattern: str, branch: str, d_state: int) -> str:
    mixer = f"heads=2 window=none d_state={d_state} d_conv=3 expand=1 branch={branch} " \
            "conv1d=regular out=concat"
    return ("stem=16 mlp=4 drop_path=0.1 layer_scale=none | depth=1 width=16 pattern=conv"
            " | depth=1 width=32 pattern=conv"
            f" | depth=4 width=64 pattern={pattern} {mixer}"
            f" | depth=2 width=128 pattern={pattern} {mixer}")


def fidelity_label(epochs: int) -> str:
    """The label ``mvlab sweep`` gives a training budget."""
    return records.fidelity_label(epochs, RESOLUTION)


def training_losses(epochs: int, accuracy: float, rng: np.random.Generator) -> list[float]:
    """Every epoch's mean training loss of a made-up binary trial: at ln 2 until the seed leaves
    the plateau in epoch 1 or 2 (drawn), then falling to about the loss its accuracy implies."""
    plateau, final = math.log(NUM_CLASSES), min(-math.log(max(accuracy, 0.1) / 100), 0.6)
    leaves = min(int(rng.integers(1, 3)), epochs)
    return [plateau * (1 - 0.002 * rng.random()) if epoch < leaves
            else final + (0.66 - final) * 0.5 ** (epoch - leaves)
            for epoch in range(1, epochs + 1)]


def write_synthetic_study(name: str, storage, tracking_uri: str | None = None,
                          patterns=PATTERNS, branches=("on", "off"), d_states=(4, 16),
                          epochs=(2, 6), repeated_seeds: int = 3, seed: int = 0) -> None:
    """Write study ``name`` to Optuna ``storage`` (and MLflow at ``tracking_uri`` if given).

    Every pattern x branch x d_state configuration is trained for each of ``epochs`` with seed
    0; the first configuration of each pattern also with seeds 1 .. ``repeated_seeds`` - 1. One
    trial fails and one is pruned, as in a real sweep. ``storage`` is an Optuna URL, a journal
    file path (created if missing) or a storage object."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    from mvlab.analysis.load import open_storage

    rng = np.random.default_rng(seed)
    loss_rng = np.random.default_rng(seed + 1)  # its own stream: the scores stay as they were
    knobs = {"pattern": list(patterns), "branch": list(branches), "d_state": list(d_states)}
    distributions = {k: CategoricalDistribution(v) for k, v in knobs.items()}
    distributions["train.epochs"] = CategoricalDistribution(list(epochs))
    distributions[records.SEED] = CategoricalDistribution(list(range(max(repeated_seeds, 1))))
    study = optuna.create_study(study_name=name, storage=open_storage(storage, must_exist=False),
                                directions=list(OBJECTIVES.values()))
    with warnings.catch_warnings():  # set_metric_names is "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(OBJECTIVES))
    study.set_user_attr(records.STUDY_KIND, records.KIND_POPULATION)
    study.set_user_attr(records.STUDY_SYNTHETIC, True)
    # As a study file's analysis: section: the first configuration of the first pattern is the
    # reference (it is one of those run with every seed).
    study.set_user_attr(records.STUDY_ANALYSIS, {
        "reference": {"pattern": patterns[0], "branch": branches[0], "d_state": d_states[0]},
        "equivalence_margin": 0.5, "reliability_threshold": 0.8, "trend": {}})
    client, parent = _mlflow_parent(name, tracking_uri)
    if tracking_uri:
        study.set_user_attr(records.STUDY_TRACKING_URI, tracking_uri)
        study.set_user_attr(records.STUDY_EXPERIMENT, name)
        study.set_user_attr(records.STUDY_PARENT_RUN_ID, parent.info.run_id)
    configs = list(itertools.product(*knobs.values()))
    quality = {c: _PATTERN_EFFECT.get(c[0], 0.0) + 0.01 * (c[1] == "on") + 0.001 * c[2]
               + rng.normal(0, 0.01) for c in configs}
    first_of_pattern = {c[0]: c for c in reversed(configs)}
    for config, budget in itertools.product(configs, epochs):
        pattern, branch, d_state = config
        spec = _spec(pattern, branch, d_state)
        seeds = range(repeated_seeds) if first_of_pattern[pattern] == config else [0]
        for run_seed in seeds:
            accuracy = 100 * float(np.clip(0.55 + 0.04 * np.log(budget) + quality[config]
                                           + rng.normal(0, 0.008), 0, 1))  # percent
            size = 60_000 * (1.3 if pattern == "attn_only" else 1.0) * (1 + d_state / 32)
            throughput = float(2.0e7 / size * (0.8 if branch == "on" else 1.0)
                               * rng.uniform(0.97, 1.03))
            params = {"pattern": pattern, "branch": branch, "d_state": d_state,
                      "train.epochs": budget, records.SEED: run_seed}
            losses = training_losses(budget, accuracy, loss_rng)
            attrs = {records.SPEC: spec, records.SEED: run_seed,
                     records.FIDELITY: fidelity_label(budget), records.STATUS: records.STATUS_OK,
                     records.PARAMS: int(size), records.MACS: int(size * 40),
                     records.NUM_CLASSES: NUM_CLASSES, records.TRAIN_LOSS: losses[-1],
                     records.TRAIN_LOSSES: losses, records.STAGE_EPOCHS: 0}
            _record(study, client, parent, params, distributions, attrs,
                    [accuracy, throughput], budget)
    pattern, branch, d_state = configs[-1]
    failed = {"pattern": pattern, "branch": branch, "d_state": d_state,
              "train.epochs": epochs[0], records.SEED: 0}
    _record(study, client, parent, failed, distributions,
            {records.SPEC: _spec(pattern, branch, d_state), records.SEED: 0,
             records.FIDELITY: fidelity_label(epochs[0]), records.STATUS: records.STATUS_FAILED,
             records.REASON: "loss is nan at epoch 1, step 3"}, None, epochs[0])
    study.add_trial(optuna.trial.create_trial(
        params=failed, distributions=distributions, state=optuna.trial.TrialState.PRUNED,
        user_attrs={records.SEED: 0, records.REASON: "dominated after epoch 1"}))
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
            metrics = [Metric(records.HELDOUT_TOP1, values[0] * (epoch + 1) / epochs, 0, epoch)
                       for epoch in range(epochs)]
            metrics += [Metric(records.TRAIN_LOSS, loss, 0, epoch)
                        for epoch, loss in enumerate(attrs[records.TRAIN_LOSSES])]
            metrics.append(Metric(records.THROUGHPUT, values[1], 0, epochs))
        client.log_batch(run.info.run_id, metrics=metrics,
                         params=[Param(k, str(v)) for k, v in params.items()],
                         tags=[RunTag(records.SPEC, attrs[records.SPEC])])
        client.set_terminated(run.info.run_id, "FINISHED" if values else "FAILED")
        attrs = {**attrs, records.MLFLOW_RUN_ID: run.info.run_id}
    state = optuna.trial.TrialState.COMPLETE if values else optuna.trial.TrialState.FAIL
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                              values=values, user_attrs=attrs, state=state))

"""Which trials never left the plateau: they learned next to nothing in their budget.

On tasks such as Pathfinder a network sits at the loss of a uniform guess (ln K for K classes,
whatever the targets' smoothing or mixing) for hundreds of optimiser steps, then its loss falls
steeply. When it leaves depends on the seed as much as on the architecture
(results/calibration/clearance/RUN.md, section 9: one network at 83.6 % with one seed and at
chance with the next). A trial whose last epoch still trained within 2 % of that loss had
learned next to nothing by the end of its budget (the loss is the epoch's mean, so a start in
the last few percent of the epoch still counts as on the plateau). The score of such a trial
says when the network would start to learn, not how well it mixes tokens; the check reads the
loss, not the score, and the relative tolerance is loose for many classes (a calibrated guess
at 0.98 ln K is right 58 % of the time with two classes, 20 % with ten). A configuration with some seeds there and some not has a two-humped seed spread:
more seeds average it without narrowing it, and a t interval over them is a rough guide only.
A longer budget or another learning rate can move seeds off the plateau; neither is sure to.

The check needs two trial attributes, recorded since 2026-12-05: the last epoch's mean training
loss (``train_loss``) and the class count (``num_classes``). Trials without them are "not
recorded", never "off the plateau". When a seed left it (``exit_epochs``: the epoch from which
its mean training loss stayed below the same threshold, looked for after any ``data.curriculum``
stages) needs every epoch's loss (``train_losses``, with ``stage_epochs``), recorded since the
tenth session of 2026-12-05. It assumes balanced classes: on skewed data a network that learned
only the class prior sits below ln K and is not flagged.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from mvlab import records

TOLERANCE = 0.02  # on the plateau: last-epoch training loss >= (1 - TOLERANCE) * ln K
LOSS_COLUMN = records.TRAIN_LOSS


def uniform_loss(num_classes: float) -> float:
    """The cross-entropy of a uniform guess over ``num_classes`` classes (nan below 2)."""
    return math.log(num_classes) if num_classes >= 2 else math.nan


def threshold(num_classes: float) -> float:
    """The training loss below which a seed has left the plateau (nan below 2 classes)."""
    return uniform_loss(num_classes) * (1 - TOLERANCE)


def on_plateau(table: pd.DataFrame) -> pd.Series:
    """Per trial: True when its last epoch trained at the loss of a uniform guess, False when
    below it, <NA> when the loss or the class count was not recorded."""
    missing = pd.Series(math.nan, index=table.index)
    loss = pd.to_numeric(table.get(LOSS_COLUMN, missing), errors="coerce")
    classes = pd.to_numeric(table.get(records.NUM_CLASSES, missing), errors="coerce")
    limit = classes.map(threshold)
    known = loss.notna() & limit.notna()
    return (loss >= limit).astype("boolean").where(known, pd.NA)


def exit_epochs(table: pd.DataFrame) -> pd.Series:
    """Per trial: the epoch (1-based, counting any data.curriculum stages) from which its mean
    training loss stayed below the plateau threshold to the end of training; ``inf`` when its
    last epoch was still on the plateau (as ``on_plateau`` says); nan when the losses or the
    class count were not recorded. Only the task's epochs count: a stage's loss is on other
    images."""
    def one(row: pd.Series) -> float:
        losses = _losses(row.get(records.TRAIN_LOSSES))
        limit = threshold(float(pd.to_numeric(row.get(records.NUM_CLASSES), errors="coerce")))
        if losses is None or math.isnan(limit):
            return math.nan
        skip = pd.to_numeric(row.get(records.STAGE_EPOCHS), errors="coerce")
        skip = 0 if pd.isna(skip) else int(skip)
        exit_epoch = math.inf
        for epoch in range(len(losses), skip, -1):  # back from the end while below the limit
            if losses[epoch - 1] >= limit:
                break
            exit_epoch = float(epoch)
        return exit_epoch

    if table.empty:
        return pd.Series(dtype=float, index=table.index)
    return table.apply(one, axis=1).astype(float)


def _losses(value: object) -> list[float] | None:
    """A recorded ``train_losses``: a list from the storage, its JSON text from a trials.csv."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, (list, tuple)) or not value:
        return None
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def describe_exits(epochs: pd.Series, seeds: pd.Series) -> str:
    """``seed 0: 2, seed 1: never`` for one configuration's trials, in seed order (``not
    recorded`` for a trial without the records); empty when none was recorded."""
    pairs = sorted(zip(seeds, epochs, strict=True), key=lambda item: _seed_order(item[0]))
    if all(pd.isna(epoch) for _, epoch in pairs):
        return ""
    return ", ".join(f"seed {seed_text(seed)}: " + (
        "not recorded" if pd.isna(epoch) else "never" if math.isinf(epoch) else str(int(epoch)))
        for seed, epoch in pairs)


def _seed_order(seed: object) -> tuple[int, float, str]:
    try:
        return (0, float(seed), "")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, 0.0, str(seed))


def seed_text(seed: object) -> str:
    """``3`` for a seed read back as 3.0 (a column with a missing seed is float)."""
    if isinstance(seed, float) and seed.is_integer():
        return str(int(seed))
    return str(seed)


def plateau_counts(table: pd.DataFrame, config: str) -> pd.DataFrame:
    """Per configuration: ``on_plateau`` (trials on the plateau), ``recorded`` (trials the check
    could judge) and ``trials``."""
    flags = on_plateau(table)
    grouped = flags.groupby(table[config], sort=False)
    return pd.DataFrame({"on_plateau": grouped.sum().astype(int),
                         "recorded": grouped.count().astype(int),
                         "trials": grouped.size().astype(int)})


def describe_threshold() -> str:
    """The rule in words, for reports."""
    return (f"A seed is on the plateau when the mean training loss of its last epoch stays "
            f"within {TOLERANCE * 100:g} % of a uniform guess's, ln K for K classes: at least "
            f"{threshold(2):.3f} for two")

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
A longer budget or a lower learning rate moves seeds off the plateau.

The check needs two trial attributes, recorded since 2026-12-05: the last epoch's mean training
loss (``train_loss``) and the class count (``num_classes``). Trials without them are "not
recorded", never "off the plateau". It assumes balanced classes: on skewed data
a network that learned only the class prior sits below ln K and is not flagged.
"""
from __future__ import annotations

import math

import pandas as pd

from mvlab import records

TOLERANCE = 0.02  # on the plateau: last-epoch training loss >= (1 - TOLERANCE) * ln K
LOSS_COLUMN = records.TRAIN_LOSS


def uniform_loss(num_classes: float) -> float:
    """The cross-entropy of a uniform guess over ``num_classes`` classes (nan below 2)."""
    return math.log(num_classes) if num_classes >= 2 else math.nan


def on_plateau(table: pd.DataFrame) -> pd.Series:
    """Per trial: True when its last epoch trained at the loss of a uniform guess, False when
    below it, <NA> when the loss or the class count was not recorded."""
    missing = pd.Series(math.nan, index=table.index)
    loss = pd.to_numeric(table.get(LOSS_COLUMN, missing), errors="coerce")
    classes = pd.to_numeric(table.get(records.NUM_CLASSES, missing), errors="coerce")
    threshold = classes.map(uniform_loss) * (1 - TOLERANCE)
    known = loss.notna() & threshold.notna()
    return (loss >= threshold).astype("boolean").where(known, pd.NA)


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
            f"{(1 - TOLERANCE) * uniform_loss(2):.3f} for two")

"""Optimiser and learning-rate schedule, built with timm's factories.

Weight decay is applied to weight matrices and kernels only: every 1-d parameter (norm scales,
biases, layer-scale gammas) and every parameter the model names in ``no_weight_decay()`` (the
SSM's ``A_log`` and ``D``, which are 2-d and 1-d respectively) is put in a zero-decay group.
Decaying ``A_log`` would pull the state-space decay rates toward a fixed value, which is not
regularisation of the kind weight decay is meant to be.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import torch
from torch import nn

from mvlab.errors import UserError
from mvlab.training.config import optimizer_error


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """The names/patterns the model excludes from weight decay (timm's ``no_weight_decay()``)."""
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def _excluded(name: str, patterns: Iterable[str]) -> bool:
    # A model may return full names ("levels.2.blocks.4.mixer.A_log"), wildcards ("*.A_log") or
    # bare leaf names ("A_log"); all three forms are honoured.
    for pattern in patterns:
        if name == pattern or name.endswith("." + pattern) or fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def param_groups(model: nn.Module, weight_decay: float,
                 no_weight_decay: Iterable[str] | None = None) -> list[dict]:
    """Two parameter groups: ``decay`` (weight matrices and kernels) and ``no_decay`` (1-d
    parameters, biases and the names in ``no_weight_decay``, by default the model's own list).
    Each group carries a ``name`` and the parameter ``names`` so the split can be inspected."""
    skip = no_weight_decay_names(model) if no_weight_decay is None else set(no_weight_decay)
    groups = {"decay": ([], []), "no_decay": ([], [])}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim <= 1 or name.endswith(".bias") or _excluded(name, skip)
        params, names = groups["no_decay" if exempt else "decay"]
        params.append(param)
        names.append(name)
    return [
        {"name": key, "params": params, "names": names,
         "weight_decay": weight_decay if key == "decay" else 0.0}
        for key, (params, names) in groups.items() if params
    ]


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                    **kwargs) -> torch.optim.Optimizer:
    """Any optimiser in timm's registry (``adamw``, ``lamb``, ``sgd``, ...) on ``param_groups``."""
    import timm.optim

    # TrainConfig has refused names outside OPTIMIZERS already; this catches the ones an older
    # timm than the one OPTIMIZERS was written from lacks.
    if name.lower() not in set(timm.optim.list_optimizers()):
        raise UserError(optimizer_error(name) or f"train.optimizer={name!r}: the installed timm "
                        f"{timm.__version__} does not have it; upgrade timm or try adamw")
    groups = param_groups(model, weight_decay)
    for group in groups:
        group.pop("names")  # optimiser state dicts stay small and name-free
    return timm.optim.create_optimizer_v2(groups, opt=name.lower(), lr=lr,
                                          weight_decay=weight_decay, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int,
                    warmup_epochs: float, warmup_lr: float, min_lr: float, sched: str = "cosine"):
    """timm's cosine schedule (or any ``create_scheduler_v2`` name), updated every optimiser step.

    Warm-up is a prefix of ``warmup_epochs`` (may be fractional: proxies are short), after which
    the cosine decays from the base lr to ``min_lr`` over the remaining steps, so the run ends at
    ``min_lr`` exactly when ``epochs`` are done. Call ``scheduler.step_update(num_updates=step)``
    after each optimiser step.
    """
    from timm.scheduler import create_scheduler_v2

    total = max(1, epochs * steps_per_epoch)
    warmup_steps = min(int(round(warmup_epochs * steps_per_epoch)), total - 1)
    # create_scheduler_v2 multiplies epoch counts by updates_per_epoch; passing 1 update per
    # "epoch" with step counts keeps fractional warm-up exact.
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=sched, num_epochs=total - warmup_steps, warmup_epochs=warmup_steps,
        warmup_lr=warmup_lr, warmup_prefix=True, min_lr=min_lr, step_on_epochs=False,
        updates_per_epoch=1,
    )
    return scheduler


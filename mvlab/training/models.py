"""Turn what a user typed (preset, spec string, timm name) into a model, with one error path."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mvlab.errors import UserError


def make_model(name: str, num_classes: int, in_chans: int = 3,
               scan_backend: str = "auto") -> nn.Module:
    """An mvlab preset or spec string (scan routed to ``scan_backend``) or any timm model name.

    Raises ``SpecError`` for a malformed spec and ``UserError`` for a name neither mvlab nor timm
    knows."""
    import timm

    from mvlab.models import create_model, set_scan_backend

    try:
        model = create_model(name, num_classes=num_classes, in_chans=in_chans)
    except RuntimeError as exc:
        if "unknown model" not in str(exc).lower():
            raise
        close = timm.list_models(f"*{name[:6]}*")[:6] if name else []
        hint = f" (timm has e.g. {', '.join(close)})" if close else ""
        raise UserError(f"{name!r} is neither an mvlab preset/spec nor a timm model name{hint}; "
                        f"mvlab presets: tiny, proxy, T, T2, S, B, L, L2, L3") from None
    if getattr(model, "spec", None):
        set_scan_backend(model, scan_backend)
    return model


def start_early_part_from(model: nn.Module, build: Callable[[], nn.Module], seed: int,
                          stages: int) -> int:
    """Overwrite ``model``'s stem and first ``stages`` stages with the initial weights
    ``build()`` gives them under ``seed`` (``train.early_init_seed``); returns how many tensors
    were replaced. The random state is put back afterwards, so dropout, drop-path and mixup
    draw as they would have: with ``seed`` equal to the run's own, the run is unchanged.
    Only the CPU generators are seeded for the donor (it is built on the CPU).

    Raises ``UserError`` for a network without the MambaVision layout (a timm name); the stage
    count is bounded by ``TrainConfig`` (``MambaVision.early_part`` checks it again)."""
    from mvlab.training.runtime import capture_rng_state, restore_rng_state, seed_everything

    if not hasattr(model, "early_part"):
        raise UserError(f"train.early_init_seed={seed}: {type(model).__name__} is not an mvlab "
                        f"spec network (stem + stages); use an mvlab preset or spec string, or "
                        f"unset it")
    prefixes = model.early_part(stages)
    rng = capture_rng_state()
    try:
        seed_everything(seed, devices=False)
        donor = build().state_dict()
    finally:
        restore_rng_state(rng)
    state = model.state_dict()
    early = [name for name in state if name.startswith(prefixes)]
    state.update({name: donor[name] for name in early})
    model.load_state_dict(state)
    return len(early)

"""Training checkpoints: everything needed to continue a run bit-for-bit (on the CPU).

A checkpoint is written to a temporary file in the same directory and renamed over the old one,
so a crash mid-write leaves the previous checkpoint intact, never a truncated file.

A checkpoint holds tensors and plain values only (NumPy arrays, such as NumPy's RNG state, are
stored as tensors), so it is read with ``torch.load(..., weights_only=True)``: a planted
``last.pt`` cannot run code on ``--resume``; a foreign or damaged file is one clear error.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mvlab.errors import UserError

CHECKPOINT_NAME = "last.pt"
FORMAT_VERSION = 2  # 1 held NumPy arrays, which only a code-running unpickler reads
_REQUIRED = ("fingerprint", "epoch", "global_step", "history", "model", "optimizer", "scheduler",
             "scaler", "rng")


class ResumeError(UserError):
    """A ``last.pt`` that is not a loadable mvlab training checkpoint."""


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` to ``directory/last.pt``."""
    state = {"format_version": FORMAT_VERSION, **_plain(state)}
    return atomic_write(Path(directory) / CHECKPOINT_NAME, lambda tmp: torch.save(state, tmp))


def load_checkpoint(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The state saved in ``directory/last.pt``, or ``None`` when there is none. Read
    weights-only; anything else than an mvlab checkpoint raises ``ResumeError``."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        return None
    fix = "delete it or train into a new --out / train.checkpoint_dir to start afresh"
    try:
        with warnings.catch_warnings():  # "pickle protocol 4 ..." from a file torch did not write
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, a bad zip, a truncated file
        raise ResumeError(f"cannot resume from {path}: {_why_unloadable(exc)}; {fix}") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise ResumeError(f"cannot resume from {path}: not an mvlab training checkpoint; {fix}")
    if state["format_version"] != FORMAT_VERSION:
        raise ResumeError(f"cannot resume from {path}: checkpoint format "
                          f"{state['format_version']!r}, this mvlab reads {FORMAT_VERSION}; {fix}")
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise ResumeError(f"cannot resume from {path}: the checkpoint lacks {', '.join(missing)}; "
                          f"{fix}")
    return state


def _why_unloadable(exc: BaseException) -> str:
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:  # the weights-only unpickler met a class or function: a pickle that may run code
        return (f"it holds a Python object ({found.group(1)}) where an mvlab checkpoint holds "
                f"only tensors and plain values (or it is an older mvlab checkpoint, format 1), "
                f"so it is not loaded")
    lines = text.strip().splitlines()
    # torch's weights-only message is a paragraph about trusting the source; ours says it
    detail = "" if "Weights only load failed" in text or not lines else f": {lines[0]}"
    return f"not a readable PyTorch checkpoint (damaged, truncated or another format{detail})"


def _plain(value: Any) -> Any:
    """``value`` with NumPy arrays as tensors and NumPy scalars as Python numbers: what the
    weights-only unpickler reads (``np.random.set_state`` takes the tensor back as is)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, copy=True))
    if isinstance(value, np.generic):
        return value.item()
    if type(value) in (dict, OrderedDict):
        return type(value)((k, _plain(v)) for k, v in value.items())
    if type(value) in (list, tuple):
        return type(value)(_plain(v) for v in value)
    return value


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` as indented JSON."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(payload, fh, indent=2, default=str)
            fh.write("\n")
    return atomic_write(path, write)

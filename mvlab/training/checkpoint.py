"""Training checkpoints: everything needed to continue a run bit-for-bit (on the CPU).

A checkpoint is written to a temporary file in the same directory and renamed over the old one,
so a crash mid-write leaves the previous checkpoint intact, never a truncated file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "last.pt"
FORMAT_VERSION = 1


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
    state = {"format_version": FORMAT_VERSION, **state}
    return atomic_write(Path(directory) / CHECKPOINT_NAME, lambda tmp: torch.save(state, tmp))


def load_checkpoint(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The state saved in ``directory/last.pt``, or ``None`` when there is none."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        return None
    # Our own file with RNG states (NumPy arrays, Python tuples): not loadable weights-only.
    return torch.load(path, map_location="cpu", weights_only=False)


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` as indented JSON."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(payload, fh, indent=2, default=str)
            fh.write("\n")
    return atomic_write(path, write)

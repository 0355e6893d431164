"""``DataConfig``: everything that defines which images a run sees and how they are prepared."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvlab.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DATASETS = ("builtin", "folder", "imagenet")  # "imagenet" is an alias of "folder"


@dataclass
class DataConfig:
    """Which data a proxy run uses and how it is prepared.

    ``dataset``: ``"builtin"`` (the shipped Fashion-MNIST subset, offline) or ``"folder"``
    (alias ``"imagenet"``: an ImageNet-style tree at ``root``, see docs/data.md).
    ``classes``: ``"all"``, ``"first:N"``, ``"random:N"`` / ``"random:N,SEED"``, a shipped list
    name (``imagenet100``, ``imagenette``, ``imagewoof``), a path to a list file (one class id a
    line), or an explicit list / comma-separated string of class ids.
    ``per_class`` caps the train images taken per class *before* the held-out split is carved
    from them (``heldout_fraction``, stratified, seeded); ``val_per_class`` caps the official val
    split that results are reported on. ``storage_resolution`` is the side of the square images in
    the decoded cache (default ``round(resolution / crop_pct)``).
    """

    dataset: str = "builtin"
    root: str | None = None
    classes: str | list[str] | tuple[str, ...] = "all"
    per_class: int | None = None
    val_per_class: int | None = None
    heldout_fraction: float = 0.1
    seed: int = 0
    resolution: int = 64
    crop_pct: float = 0.875
    cache: bool = True
    cache_dir: str | None = None
    num_workers: int = 0
    storage_resolution: int | None = None
    train_split: str = "train"
    val_split: str = "val"
    val_labels: str | None = None
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        """Build from a plain dict (a study file's ``data:`` block); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DataError(f"unknown data option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(values)
        for key in ("scale", "ratio", "mean", "std"):
            if key in values and values[key] is not None:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ``DataError`` for values that cannot work, naming the option and the fix."""
        if self.dataset not in DATASETS:
            raise DataError(f"data.dataset={self.dataset!r}: use one of {', '.join(DATASETS)}")
        if self.dataset != "builtin" and not self.root:
            raise DataError(f"data.dataset={self.dataset!r} needs data.root: the folder holding "
                            f"train/ and val/ (ImageNet layout, see docs/data.md)")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise DataError(f"data.heldout_fraction={self.heldout_fraction}: must be in [0, 1)")
        for name in ("per_class", "val_per_class", "storage_resolution"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise DataError(f"data.{name}={value}: must be a positive integer or null")
        if int(self.resolution) < 8:
            raise DataError(f"data.resolution={self.resolution}: must be at least 8 pixels")
        if not 0.0 < self.crop_pct <= 1.0:
            raise DataError(f"data.crop_pct={self.crop_pct}: must be in (0, 1]")
        if self.storage_resolution is not None and self.storage_resolution < self.resolution:
            raise DataError(f"data.storage_resolution={self.storage_resolution} is below "
                            f"data.resolution={self.resolution}: store at least the training size")
        if not (0 < self.scale[0] <= self.scale[1] <= 1.0):
            raise DataError(f"data.scale={self.scale}: needs 0 < min <= max <= 1")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise DataError(f"data.ratio={self.ratio}: needs 0 < min <= max")

    @property
    def stored_side(self) -> int:
        """Side of the stored square: eval's resize size, so eval is a pure center crop of it."""
        if self.storage_resolution:
            return int(self.storage_resolution)
        return max(int(self.resolution), int(round(self.resolution / self.crop_pct)))


def default_cache_dir() -> Path:
    """``$MVLAB_CACHE``, else ``$XDG_CACHE_HOME/mvlab``, else ``~/.cache/mvlab``."""
    if os.environ.get("MVLAB_CACHE"):
        return Path(os.environ["MVLAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mvlab"


def resolve_cache_dir(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()

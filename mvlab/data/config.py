"""``DataConfig``: everything that defines which images a run sees and how they are prepared."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvlab.config_fields import from_mapping
from mvlab.errors import DataError

MAX_RESOLUTION = 4096  # pixels; bigger inputs are a typo (docs/studies.md, Limits)
MAX_SEED = 2**32 - 1  # numpy's seed range; every seed mvlab takes is checked against it

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROCEDURAL = ("pathfinder", "same_different")  # generated from a seed: mvlab.data.procedural
DATASETS = ("builtin", "folder", "imagenet") + PROCEDURAL  # "imagenet" is an alias of "folder"
# Crop and aspect defaults per kind of data: photos get timm's; the procedural tasks none at all,
# since a crop could cut a marker or a framed glyph out of the image and change the answer.
PHOTO_GEOMETRY = dict(crop_pct=0.875, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
PROCEDURAL_GEOMETRY = dict(crop_pct=1.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
MAX_CLEARANCE = 16  # px at 64 px: beyond this two contours rarely fit the image at all
# Keys added since: the value that means what an older mvlab did, and the datasets it acts on.
# A study recorded before the key existed resumes as if written with that value (elsewhere the
# key changes nothing, so the record takes the current one: ``with_added_keys``).
ADDED = {"clearance": (0.0, ("pathfinder",)), "joints": ("forward", ("pathfinder",)),
         "shortest_contour": (0, ("pathfinder",)), "curriculum": ((), PROCEDURAL)}
MAX_CURRICULUM_STAGES = 16


@dataclass
class DataConfig:
    """Which data a proxy run uses and how it is prepared.

    ``dataset``: ``"builtin"`` (the shipped Fashion-MNIST subset, offline), ``"folder"``
    (alias ``"imagenet"``: an ImageNet-style tree at ``root``, see docs/data.md), or a
    procedural token-mixing task generated from ``seed``: ``"pathfinder"`` (knobs
    ``contour_length``, ``distractors``, ``clearance``, ``joints``,
    ``shortest_contour``) or ``"same_different"`` (``glyph_cells``,
    ``changed_cells``, ``distractors``); for those ``per_class`` / ``val_per_class`` are the
    generated counts (default 2000 / 500 a class), and ``curriculum`` may train the first
    epochs on other values of the task's knobs: a list of stages such as ``{epochs: 2,
    contour_length: 2, distractors: 0}``, each its own generated pool with the same counts
    (held-out and val stay this config's; docs/data.md, "Curriculum").
    ``classes``: ``"all"``, ``"first:N"``, ``"random:N"`` / ``"random:N,SEED"``, a shipped list
    name (``imagenet100``, ``imagenette``, ``imagewoof``), a path to a list file (one class id a
    line), or an explicit list / comma-separated string of class ids.
    ``per_class`` caps the train images taken per class *before* the held-out split is carved
    from them (``heldout_fraction``, stratified, seeded); ``val_per_class`` caps the official val
    split that results are reported on. ``storage_resolution`` is the side of the square images in
    the decoded cache (default ``round(resolution / crop_pct)``). ``crop_pct``, ``scale`` and
    ``ratio`` left at None take the dataset's defaults (``PHOTO_GEOMETRY`` or, for procedural
    tasks, ``PROCEDURAL_GEOMETRY``: no crop).
    """

    dataset: str = "builtin"
    root: str | None = None
    classes: str | list[str] | tuple[str, ...] = "all"
    per_class: int | None = None
    val_per_class: int | None = None
    heldout_fraction: float = 0.1
    seed: int = 0
    order_seed: int | None = None  # training order + augmentation; None: seed
    resolution: int = 64
    crop_pct: float | None = None
    cache: bool = True
    cache_dir: str | None = None
    num_workers: int = 0
    storage_resolution: int | None = None
    train_split: str = "train"
    val_split: str = "val"
    val_labels: str | None = None
    scale: tuple[float, float] | None = None
    ratio: tuple[float, float] | None = None
    hflip: float = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    contour_length: int = 10  # pathfinder: dashes per contour (longer = harder)
    distractors: int = 4  # pathfinder: unmarked contours; same_different: unframed glyphs
    # pathfinder: px (at 64 px) kept between the two candidate contours and around the markers;
    # 0 is the first generator, where they touch in 38-86 % of images (docs/data.md)
    clearance: float = 2.0
    # pathfinder: where each gap turns; "forward", what mvlab drew before the knob, lets a crop
    # around the second marker guess the label 60-63 % of the time (docs/data.md)
    joints: str = "centred"
    # pathfinder: 0, every contour has contour_length dashes; else each pair of images draws
    # its length from shortest_contour..contour_length (docs/data.md, "Mixed lengths")
    shortest_contour: int = 0
    glyph_cells: int = 4  # same_different: a glyph is glyph_cells x glyph_cells cells
    changed_cells: int = 2  # same_different: cells swapped in a "different" pair (fewer = harder)
    # procedural tasks: stages trained first, in order, each {epochs: N, <task knob>: value, ...}
    curriculum: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        geometry = PROCEDURAL_GEOMETRY if self.dataset in PROCEDURAL else PHOTO_GEOMETRY
        for key, value in geometry.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.validate()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        """Build from a plain dict (a study file's ``data:`` block, ``--set`` pairs); values are
        coerced to each field's type, unknown keys are an error."""
        return from_mapping(cls, values, DataError, "data")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ``DataError`` for values that cannot work, naming the option and the fix."""
        if self.dataset not in DATASETS:
            raise DataError(f"data.dataset={self.dataset!r}: use one of {', '.join(DATASETS)}")
        if self.dataset in ("folder", "imagenet") and not self.root:
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
        self._validate_values()
        from mvlab.data.procedural.pathfinder import JOINTS
        if self.joints not in JOINTS:  # on every dataset: a typo should not wait for Pathfinder
            raise DataError(f"data.joints={self.joints!r}: use one of {', '.join(JOINTS)} "
                            f"(forward: what mvlab drew before the knob)")
        self._validate_lengths()
        if self.dataset in PROCEDURAL:
            self._validate_procedural()
        self.stages()  # a curriculum's stages are configs too: each is validated here

    def stages(self) -> list[tuple[int, DataConfig]]:
        """``curriculum`` as (epochs, the config its training images come from), in order."""
        stages = self.curriculum
        if not stages:
            return []
        if self.dataset not in PROCEDURAL:
            raise DataError(f"data.curriculum needs a generated task ({', '.join(PROCEDURAL)}): "
                            f"its stages change the task's knobs; drop it for "
                            f"data.dataset={self.dataset}")
        if not isinstance(stages, (list, tuple)) or len(stages) > MAX_CURRICULUM_STAGES:
            raise DataError(f"data.curriculum: a list of at most {MAX_CURRICULUM_STAGES} stages "
                            f"such as {{epochs: 2, contour_length: 2}}, got {stages!r}")
        from mvlab.data.procedural import TASKS
        knobs = TASKS[self.dataset].knobs
        out = []
        for index, stage in enumerate(stages):
            where = f"data.curriculum[{index}]"
            if not isinstance(stage, dict):
                raise DataError(f"{where}={stage!r}: a stage is a mapping such as "
                                f"{{epochs: 2, {knobs[0]}: 2}}")
            epochs = stage.get("epochs")
            if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
                raise DataError(f"{where}.epochs={epochs!r}: every stage needs a whole number "
                                f"of epochs >= 1")
            unknown = sorted(set(stage) - {"epochs", *knobs})
            if unknown:
                raise DataError(f"{where}: {', '.join(unknown)} cannot change between stages; "
                                f"a stage sets epochs and any of {', '.join(knobs)}")
            changes = {key: value for key, value in stage.items() if key != "epochs"}
            try:
                config = dataclasses.replace(self, curriculum=(), **changes)
            except (DataError, TypeError) as error:
                raise DataError(f"{where}: {error}") from None
            out.append((epochs, config))
        return out

    @property
    def curriculum_epochs(self) -> int:
        """Epochs trained on the curriculum's stages before this config's own images."""
        return sum(epochs for epochs, _ in self.stages())

    def _validate_procedural(self) -> None:
        name = f"data.dataset={self.dataset}"
        if self.root:
            raise DataError(f"{name} is generated, not read: drop data.root={self.root!r}")
        if self.resolution < 32:
            raise DataError(f"{name} needs data.resolution >= 32, got {self.resolution}")
        if self.crop_pct != 1.0 or tuple(self.scale) != (1.0, 1.0):
            raise DataError(f"{name}: data.crop_pct={self.crop_pct}, data.scale={self.scale} "
                            f"could crop a marker out of the image and change its label; "
                            f"leave them unset (no crop)")
        for key, low in (("contour_length", 2), ("distractors", 0), ("glyph_cells", 2),
                         ("changed_cells", 1)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise DataError(f"data.{key}={value!r}: must be an integer >= {low}")
        value = self.clearance
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not 0 <= value <= MAX_CLEARANCE):
            raise DataError(f"data.clearance={value!r}: must be a number of px from 0 (the first "
                            f"generator) to {MAX_CLEARANCE}")
        self.clearance = float(value)  # 2 and 2.0 draw the same images: one cache digest
        if self.dataset == "pathfinder":
            from mvlab.data.procedural.pathfinder import check as check_pathfinder
            check_pathfinder(self.stored_side, self.contour_length, self.clearance)
            if self.shortest_contour:  # the clearance rejects short contours, not long ones
                try:
                    check_pathfinder(self.stored_side, self.shortest_contour, self.clearance)
                except DataError as error:
                    raise DataError(f"data.shortest_contour={self.shortest_contour}: {error} "
                                    f"(here: a higher data.shortest_contour)") from None
        if self.dataset == "same_different":
            from mvlab.data.procedural.same_different import check
            check(self.stored_side, self.glyph_cells, self.changed_cells, self.distractors)

    def _validate_lengths(self) -> None:
        """On every dataset, like ``joints``: a typo should not wait for Pathfinder."""
        value, longest = self.shortest_contour, self.contour_length
        if self.dataset != "pathfinder" or not isinstance(longest, int):
            longest = None
        if (not isinstance(value, int) or isinstance(value, bool) or value and (
                value < 2 or longest is not None and value > longest)):
            raise DataError(f"data.shortest_contour={value!r}: must be 0 (every contour "
                            f"data.contour_length dashes) or an integer from 2 to "
                            f"data.contour_length={self.contour_length}")

    def _validate_values(self) -> None:
        """What would otherwise pass here and fail every run later (or silently mislead)."""
        if self.dataset == "builtin" and self.root:
            raise DataError(f"data.root={self.root!r} is ignored by data.dataset=builtin; set "
                            f"data.dataset=folder to read it, or drop data.root")
        if isinstance(self.classes, str) and not self.classes.strip() or \
                isinstance(self.classes, (list, tuple)) and not self.classes:
            raise DataError("data.classes is empty: give 'all', 'first:N', a list name or "
                            "class ids")
        for name in ("resolution", "storage_resolution"):
            value = getattr(self, name)
            if value is not None and int(value) > MAX_RESOLUTION:
                raise DataError(f"data.{name}={value}: above the limit of {MAX_RESOLUTION} pixels")
        for name in ("seed", "order_seed"):
            value = getattr(self, name, None)
            if value is not None and not 0 <= int(value) <= MAX_SEED:
                raise DataError(f"data.{name}={value}: must be in 0..{MAX_SEED}")
        if int(self.num_workers) < 0:
            raise DataError(f"data.num_workers={self.num_workers}: must be 0 (decode in this "
                            f"process or one per core) or more")
        if not 0.0 <= float(self.hflip) <= 1.0:
            raise DataError(f"data.hflip={self.hflip}: a probability, must be in [0, 1]")
        for name in ("scale", "ratio", "mean", "std"):
            values = tuple(getattr(self, name))
            if not all(math.isfinite(float(v)) for v in values):
                raise DataError(f"data.{name}={values}: every value must be a finite number")
        if len(tuple(self.mean)) != 3 or len(tuple(self.std)) != 3:
            raise DataError(f"data.mean and data.std need 3 values (R, G, B), got "
                            f"{tuple(self.mean)} and {tuple(self.std)}")
        if not all(float(v) > 0 for v in self.std):
            raise DataError(f"data.std={tuple(self.std)}: every value must be > 0 (images are "
                            f"divided by it)")

    @property
    def stored_side(self) -> int:
        """Side of the stored square: eval's resize size, so eval is a pure center crop of it."""
        if self.storage_resolution:
            return int(self.storage_resolution)
        return max(int(self.resolution), int(round(self.resolution / self.crop_pct)))


def curriculum_error(stage_epochs: int, epochs: int) -> str | None:
    """Why stages taking ``stage_epochs`` cannot precede a run of ``epochs`` (the end of one
    line), or None when they can: the one wording for ``--check`` and the trainer."""
    if not stage_epochs or stage_epochs < epochs:
        return None
    return (f"data.curriculum's stages take {stage_epochs} epoch(s) and train.epochs={epochs}: "
            f"the task's own images would never be trained on; raise train.epochs or shorten "
            f"the stages")


def default_cache_dir() -> Path:
    """``$MVLAB_CACHE``, else ``$XDG_CACHE_HOME/mvlab``, else ``~/.cache/mvlab``."""
    if os.environ.get("MVLAB_CACHE"):
        return Path(os.environ["MVLAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mvlab"


def resolve_cache_dir(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()


def with_added_keys(recorded: dict[str, Any], current: DataConfig) -> dict[str, Any]:
    """A study's recorded data settings with the keys added since filled in (``ADDED``)."""
    filled = dict(recorded)
    for key, (old_value, acts_on) in ADDED.items():
        if key not in filled:
            filled[key] = old_value if filled.get("dataset") in acts_on else getattr(current, key)
    return filled

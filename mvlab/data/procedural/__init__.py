"""Procedural token-mixing tasks: built-in datasets generated from a seed, offline.

A task is a vectorised numpy generator (one module each) that draws a batch of binary images for
given labels. ``materialize`` generates the train pool and the val split once per definition
(task, knobs, side, counts, seed) and writes them as the same class-folder tree of PNGs as the
built-in Fashion-MNIST set, so from there they go through the ordinary folder -> decoded cache
-> loaders path. Why these tasks: docs/data.md ("Procedural token-mixing tasks").

Determinism: images are drawn in fixed chunks of ``CHUNK``, chunk ``k`` of split ``s`` from
``numpy.random.default_rng([seed, STREAMS[s], k])``: the same definition gives the same pixels
on any machine, train and val come from disjoint seed streams, and labels alternate 0, 1, 0, ...
so both classes have exactly ``per_class`` images.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mvlab.data.builtin import write_once, write_tree
from mvlab.data.procedural import pathfinder, same_different

GENERATOR_VERSION = 1  # bump when a generator's pixels change for the same definition
CHUNK = 256
STREAMS = {"train": 0, "val": 1}
DEFAULT_PER_CLASS = 2000
DEFAULT_VAL_PER_CLASS = 500


@dataclass(frozen=True)
class Task:
    generate: Callable[..., np.ndarray]
    classes: tuple[str, str]  # class names for labels 0 and 1
    knobs: tuple[str, ...]  # the DataConfig fields the generator takes
    # Knobs added since a task first shipped, at the value that draws what it drew before: left
    # out of the definition there, so existing caches and checkpoints keep their digest.
    added: tuple[tuple[str, Any], ...] = ()


TASKS: dict[str, Task] = {
    "pathfinder": Task(pathfinder.generate, pathfinder.CLASSES,
                       ("contour_length", "distractors", "clearance", "joints",
                        "shortest_contour"),
                       (("clearance", 0.0), ("joints", "forward"), ("shortest_contour", 0))),
    "same_different": Task(same_different.generate, same_different.CLASSES,
                           ("glyph_cells", "changed_cells", "distractors")),
}


def definition(cfg: Any) -> dict[str, Any]:
    """Everything that fixes the pixels of ``cfg``'s task (a ``DataConfig``)."""
    task = TASKS[cfg.dataset]
    knobs = {knob: getattr(cfg, knob) for knob in task.knobs}
    if "shortest_contour" in knobs and knobs["shortest_contour"] == knobs["contour_length"]:
        knobs["shortest_contour"] = 0  # one length either way: the same pixels, one digest
    return {
        "task": cfg.dataset, "version": GENERATOR_VERSION, "seed": int(cfg.seed),
        "side": cfg.stored_side,
        "per_class": int(cfg.per_class or DEFAULT_PER_CLASS),
        "val_per_class": int(cfg.val_per_class or DEFAULT_VAL_PER_CLASS),
        **{knob: value for knob, value in knobs.items() if (knob, value) not in task.added},
    }


def generate_split(spec: dict[str, Any], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, side, side) uint8 and labels (N,) of ``split`` for a ``definition``."""
    task = TASKS[spec["task"]]
    total = 2 * spec["per_class" if split == "train" else "val_per_class"]
    knobs = {**dict(task.added), **{knob: spec[knob] for knob in task.knobs if knob in spec}}
    images = np.empty((total, spec["side"], spec["side"]), dtype=np.uint8)
    labels = np.arange(total, dtype=np.int64) % 2
    for k, start in enumerate(range(0, total, CHUNK)):
        rng = np.random.default_rng([spec["seed"], STREAMS[split], k])
        stop = min(start + CHUNK, total)
        images[start:stop] = task.generate(rng, labels[start:stop], spec["side"], **knobs)
    return images, labels


def materialize(cfg: Any, cache_dir: str | Path) -> Path:
    """The class-folder tree of ``cfg``'s task under ``cache_dir`` (generated on first use)."""
    spec = definition(cfg)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) / "procedural" / f"{spec['task']}-{digest}"

    def write(out: Path) -> None:
        train_images, train_labels = generate_split(spec, "train")
        val_images, val_labels = generate_split(spec, "val")
        write_tree(out, {"class_names": np.array(TASKS[spec["task"]].classes),
                         "train_images": train_images, "train_labels": train_labels,
                         "test_images": val_images, "test_labels": val_labels})
        (out / "definition.json").write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")

    return write_once(root, write, digest)

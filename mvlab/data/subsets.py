"""Subsets: which classes, how many images per class, and the seeded stratified held-out split.

Everything here is a pure function of its inputs and the seed (no global RNG, no dependence on
Python's hash seed), so a result's manifest is enough to rebuild exactly the same subset."""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mvlab.data.folders import read_text_lines
from mvlab.errors import DataError

LISTS_DIR = Path(__file__).with_name("lists")


@dataclass(frozen=True)
class ClassSelection:
    """The chosen class ids (sorted: label k is ``ids[k]``) and how they were chosen."""

    ids: tuple[str, ...]
    spec: str
    list_file: str | None = None
    list_sha256: str | None = None


def shipped_lists() -> dict[str, Path]:
    """Name -> path of the class lists that ship with mvlab (``imagenet100``, ``imagenette``, ...)."""
    return {p.stem: p for p in sorted(LISTS_DIR.glob("*.txt"))}


def read_class_list(path: Path) -> list[str]:
    """One class id per line; ``#`` starts a comment; blank lines are ignored."""
    ids = []
    for line in read_text_lines(path, "class list"):
        word = line.split("#", 1)[0].strip()
        if word:
            ids.append(word)
    if not ids:
        raise DataError(f"class list {path} names no classes (one class id a line, # comments)")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DataError(f"class list {path} names {duplicates[0]} more than once")
    return ids


def select_classes(spec: str | Sequence[str], available: Sequence[str]) -> ClassSelection:
    """Resolve a class spec (see ``DataConfig.classes``) against the classes present in train.

    ``random:N`` without a seed uses seed 0: the class set is part of the task and must not move
    with the run's data seed. A spec naming absent classes is a ``DataError`` listing them."""
    available = sorted(available)
    if not available:
        raise DataError("the train split has no classes")
    list_file = list_sha = None
    if not isinstance(spec, str):
        wanted, text = [str(c) for c in spec], ",".join(str(c) for c in spec)
    else:
        text = spec.strip()
        lists = shipped_lists()
        if text == "all":
            wanted = list(available)
        elif text.startswith("first:"):
            n = _count(text, text[len("first:"):], len(available))
            wanted = available[:n]
        elif text.startswith("random:"):
            body = text[len("random:"):]
            n_text, _, seed_text = body.partition(",")
            n = _count(text, n_text, len(available))
            try:
                rng_seed = int(seed_text) if seed_text else 0
            except ValueError:
                raise DataError(f"classes={text!r}: the seed after the comma must be an integer") from None
            wanted = random.Random(rng_seed).sample(available, n)
        elif text in lists or Path(text).expanduser().is_file():
            path = lists[text] if text in lists else Path(text).expanduser()
            wanted = read_class_list(path)
            list_file = text if text in lists else str(path.resolve())
            list_sha = hashlib.sha256(path.read_bytes()).hexdigest()
        elif "," in text or text in available:
            wanted = [c.strip() for c in text.split(",") if c.strip()]
        else:
            raise DataError(f"classes={text!r} is not 'all', 'first:N', 'random:N[,SEED]', a shipped "
                            f"list ({', '.join(lists)}), an existing list file, or class ids")
    if not wanted:
        raise DataError(f"classes={text!r} names no class; give 'all', 'first:N', a list name "
                        f"or class ids")
    present = set(available)
    missing = [c for c in wanted if c not in present]
    if missing:
        where = f" (from {list_file})" if list_file else ""
        raise DataError(f"{len(missing)} of {len(wanted)} requested classes{where} are not in the train "
                        f"split: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; check "
                        f"the data root or the class list")
    if len(set(wanted)) != len(wanted):
        raise DataError(f"classes={text!r} names a class more than once")
    return ClassSelection(tuple(sorted(wanted)), text, list_file, list_sha)


def _count(spec: str, text: str, available: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise DataError(f"classes={spec!r}: N must be an integer") from None
    if not 1 <= n <= available:
        raise DataError(f"classes={spec!r}: N must be between 1 and {available} (classes in train)")
    return n


def require_every_class(labels: np.ndarray, classes: Sequence[str], split: str,
                        skipped: Sequence[str]) -> None:
    """DataError when a selected class kept no image of ``split`` after undecodable files were
    skipped: a class the model never trains on would still be scored on val (and a split with
    no image at all trains nothing)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    empty = [c for c, n in zip(classes, counts, strict=False) if n == 0]
    if not empty:
        return
    example = f", e.g. {skipped[0]}" if skipped else ""
    what = "every selected class" if len(empty) == len(classes) else \
        f"{len(empty)} class(es): {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}"
    raise DataError(f"{split}: no decodable image left of {what} ({len(skipped)} file(s) could "
                    f"not be decoded{example}); replace those files, or choose classes without "
                    f"them")


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across processes and Python versions."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def cap_per_class(files: dict[str, list[str]], cap: int | None, seed: int, salt: str) -> dict[str, list[str]]:
    """At most ``cap`` files per class: a seeded sample, returned sorted (order-independent)."""
    if cap is None:
        return {c: sorted(f) for c, f in files.items()}
    out = {}
    for cls, names in files.items():
        names = sorted(names)
        if len(names) > cap:
            names = sorted(random.Random(stable_seed(seed, salt, cls)).sample(names, cap))
        out[cls] = names
    return out


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (train, heldout): per class ``round(fraction * n)`` rows held out
    (at least one when ``fraction > 0`` and the class has two or more rows), chosen by ``seed``.
    Both index arrays are sorted."""
    labels = np.asarray(labels)
    train, held = [], []
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        n_held = int(round(fraction * rows.size))
        if fraction > 0 and rows.size >= 2:
            n_held = min(max(n_held, 1), rows.size - 1)
        perm = np.random.default_rng(stable_seed(seed, "heldout", int(cls))).permutation(rows)
        held.append(perm[:n_held])
        train.append(perm[n_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held)).astype(np.int64)


def subset_id(definition: dict) -> str:
    """A short hash naming a subset definition (for run names and MLflow params)."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]

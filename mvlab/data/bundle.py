"""``build_data``: from a ``DataConfig`` to train / held-out / val loaders and a manifest.

One path for every dataset: (built-in -> materialised class-folder tree) -> folder listing ->
class selection and per-class caps -> decoded cache (or direct decoding) -> seeded stratified
held-out split of the train pool -> loaders. The official val split is never touched by the
selection; results are reported on it."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mvlab.data import procedural
from mvlab.data.builtin import materialize
from mvlab.data.cache import DecodedCache, build_or_open
from mvlab.data.config import PROCEDURAL, DataConfig, resolve_cache_dir
from mvlab.data.folders import SplitListing, list_split, warn_link_problems
from mvlab.data.subsets import (
    cap_per_class,
    require_every_class,
    select_classes,
    stratified_split,
    subset_id,
)
from mvlab.errors import DataError

if TYPE_CHECKING:
    from mvlab.data.loaders import CachedLoader, DirectLoader

    Loader = CachedLoader | DirectLoader

log = logging.getLogger("mvlab.data")


@dataclass
class DataBundle:
    """What a trainer needs: three loaders, the class count and the manifest to log."""

    train: Loader
    heldout: Loader
    val: Loader
    num_classes: int
    class_names: list[str]
    manifest: dict
    caches: dict[str, DecodedCache] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        """Images skipped as undecodable so far (when the cache was built, or while iterating)."""
        at_build = self.manifest["skipped"]["count"] if self.caches else 0
        return at_build + sum(getattr(loader, "skipped", 0) for loader in (self.train, self.heldout, self.val))

    def set_epoch(self, epoch: int) -> None:
        self.train.set_epoch(epoch)


@dataclass(frozen=True)
class Subset:
    """The selected files before decoding: (relative path, label) items for the train pool and val."""

    root: Path
    classes: list[str]
    pool: list[tuple[str, int]]
    val: list[tuple[str, int]]
    definition: dict


def data_root(cfg: DataConfig) -> Path:
    """The folder a config reads from; built-in sets are materialised there on first use."""
    if cfg.dataset == "builtin":
        return materialize(resolve_cache_dir(cfg))
    if cfg.dataset in PROCEDURAL:
        return procedural.materialize(cfg, resolve_cache_dir(cfg))
    return Path(cfg.root).expanduser()


def select_subset(cfg: DataConfig, root: Path | None = None) -> Subset:
    """List the root, choose classes, cap images per class: no decoding yet."""
    root = data_root(cfg) if root is None else root
    train = list_split(root, cfg.train_split)
    val = list_split(root, cfg.val_split, cfg.val_labels)
    warn_link_problems([train, val])
    selection = select_classes(cfg.classes, train.classes)
    _check_two_classes(train, selection.ids, selection.spec)
    _check_present(train, selection.ids)
    _check_present(val, selection.ids)
    _warn_val_only_classes(train, val)
    index = {c: k for k, c in enumerate(selection.ids)}
    pool_files = cap_per_class({c: train.files[c] for c in selection.ids}, cfg.per_class, cfg.seed, "train")
    val_files = cap_per_class({c: val.files[c] for c in selection.ids}, cfg.val_per_class, cfg.seed, "val")
    pool = [(rel, index[c]) for c in selection.ids for rel in pool_files[c]]
    val_items = [(rel, index[c]) for c in selection.ids for rel in val_files[c]]
    definition = {
        "dataset": cfg.dataset,
        "classes_spec": selection.spec,
        "class_list": selection.list_file,
        "class_list_sha256": selection.list_sha256,
        "classes": list(selection.ids),
        "per_class": cfg.per_class,
        "val_per_class": cfg.val_per_class,
        "heldout_fraction": cfg.heldout_fraction,
        "seed": cfg.seed,
        "val_layout": val.layout,
    }
    return Subset(root, list(selection.ids), pool, val_items, definition)


def _check_two_classes(train: SplitListing, ids, spec: str) -> None:
    """Classification with one class measures nothing: every prediction is right, so held-out
    and val top-1 come out 100 % for any model. Refused here, where every path (train, sweep,
    ``mvlab data``) selects its data, so no run can report such a number."""
    if len(ids) >= 2:
        return
    where = train.root / train.split
    if len(train.classes) < 2:
        raise DataError(f"{where} has {len(train.classes)} class folder(s) ({', '.join(ids)}); "
                        f"classification needs at least 2 classes (with one, every prediction is "
                        f"right and top-1 is 100 %); add class folders")
    raise DataError(f"classes={spec!r} selects one class ({', '.join(ids)}); classification needs "
                    f"at least 2 (with one, every prediction is right and top-1 is 100 %); "
                    f"choose more classes")


def _warn_val_only_classes(train: SplitListing, val: SplitListing) -> None:
    """A class folder in val/ that train/ lacks is left out of val. The class set comes from
    train/ (docs/data.md) and val is read only for the selected classes, so this is not an error;
    but a folder that exists in val/ alone is most often a misspelt or missing train/ folder, so
    it is named. A flat val's labels file is exempt: it usually covers all of ImageNet's 1,000
    classes whatever train/ holds."""
    if val.layout != "class-folders":
        return
    extra = sorted(set(val.files) - set(train.files))
    if extra:
        log.warning("warning: %d class folder(s) in %s have none in %s and are left out of val: "
                    "%s%s; check the folder names", len(extra), val.root / val.split,
                    train.root / train.split, ", ".join(extra[:5]), " ..." if len(extra) > 5 else "")


def _check_present(listing: SplitListing, classes) -> None:
    where = listing.root / listing.split
    absent = [c for c in classes if c not in listing.files]
    if absent:
        raise DataError(f"{len(absent)} selected class(es) have no images in {where}: "
                        f"{', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}")
    empty = [c for c in classes if not listing.files[c]]
    if empty:
        raise DataError(f"class folder(s) with no images in {where}: {', '.join(empty[:5])}"
                        f"{' ...' if len(empty) > 5 else ''}; add images, delete the folder(s), or "
                        f"choose classes without them")


def build_data(cfg: DataConfig, batch_size: int, eval_batch_size: int | None = None,
               device: str = "cpu", *, progress: bool | None = None) -> DataBundle:
    """Build the train / held-out / val loaders a proxy run uses (see ``DataConfig``).

    With ``cfg.cache`` (default) images are decoded once into the memory-mapped uint8 cache under
    ``cfg.cache_dir`` (default ``$MVLAB_CACHE`` or ``~/.cache/mvlab``) and reused by every later
    run with the same subset and storage size; otherwise each epoch decodes the files."""
    # Here, not at the top: the loaders need torch, which selecting a subset and building the
    # cache (``mvlab data info/cache``) do not.
    from mvlab.data.loaders import CachedLoader, DirectLoader

    eval_batch_size = eval_batch_size or batch_size
    subset = select_subset(cfg)
    caches: dict[str, DecodedCache] = {}
    common = dict(seed=cfg.seed, device=device)
    # The subset and held-out split follow ``seed``; the training order and augmentation may
    # follow their own seed, so a study's seeds vary them over one fixed split.
    order = dict(common, seed=cfg.seed if cfg.order_seed is None else cfg.order_seed)
    aug = dict(scale=cfg.scale, ratio=cfg.ratio, hflip=cfg.hflip, mean=cfg.mean, std=cfg.std)
    if cfg.cache:
        cache_dir = resolve_cache_dir(cfg)
        side = cfg.stored_side
        for name, items in (("train", subset.pool), ("val", subset.val)):
            caches[name] = build_or_open(cache_dir, f"{_root_tag(subset.root)}-{name}", subset.root, items,
                                         side, workers=cfg.num_workers, progress=progress)
        pool_labels = caches["train"].labels
        train_rows, held_rows = stratified_split(pool_labels, cfg.heldout_fraction, cfg.seed)
        tc, vc = caches["train"], caches["val"]
        require_every_class(tc.labels, subset.classes, "train", tc.skipped)
        require_every_class(vc.labels, subset.classes, "val", vc.skipped)
        train = CachedLoader(tc.images, tc.labels, train_rows, batch_size, train=True,
                             resolution=cfg.resolution, **order, **aug)
        heldout = CachedLoader(tc.images, tc.labels, held_rows, eval_batch_size, train=False,
                               resolution=cfg.resolution, **common, mean=cfg.mean, std=cfg.std)
        val = CachedLoader(vc.images, vc.labels, np.arange(len(vc)), eval_batch_size, train=False,
                           resolution=cfg.resolution, **common, mean=cfg.mean, std=cfg.std)
        skipped = sorted(tc.skipped + vc.skipped)
        counts = {"train": int(train_rows.size), "heldout": int(held_rows.size), "val": len(vc)}
        per_class_train = np.bincount(pool_labels[train_rows], minlength=len(subset.classes))
    else:
        labels = np.array([label for _, label in subset.pool], dtype=np.int64)
        train_rows, held_rows = stratified_split(labels, cfg.heldout_fraction, cfg.seed)
        direct = dict(resolution=cfg.resolution, crop_pct=cfg.crop_pct, num_workers=cfg.num_workers,
                      **common, **aug)
        train = DirectLoader(subset.root, [subset.pool[i] for i in train_rows], batch_size, train=True,
                             **{**direct, **order})
        heldout = DirectLoader(subset.root, [subset.pool[i] for i in held_rows], eval_batch_size,
                               train=False, **direct)
        val = DirectLoader(subset.root, subset.val, eval_batch_size, train=False, **direct)
        skipped = []  # found while iterating: DataBundle.skipped counts them
        counts = {"train": int(train_rows.size), "heldout": int(held_rows.size), "val": len(subset.val)}
        per_class_train = np.bincount(labels[train_rows], minlength=len(subset.classes))
    # A cache built by this call has named its skipped files already; a reused one says nothing
    # by itself, so its count is repeated here, once per run.
    reused = sum(len(c.skipped) for c in caches.values() if not c.built)
    if reused:
        log.warning("warning: %d undecodable image(s) skipped when the decoded cache was built "
                    "(listed in the data manifest)", reused)
    manifest = {
        "subset_id": subset_id(subset.definition),
        **subset.definition,
        "root": str(subset.root),
        "num_classes": len(subset.classes),
        "counts": counts,
        "train_per_class": {"min": int(per_class_train.min()), "max": int(per_class_train.max())},
        "resolution": cfg.resolution,
        "crop_pct": cfg.crop_pct,
        "cache": {name: str(c.path) for name, c in caches.items()} or None,
        "storage_resolution": cfg.stored_side if cfg.cache else None,
        "order_seed": cfg.seed if cfg.order_seed is None else cfg.order_seed,
        "skipped": {"count": len(skipped), "files": skipped[:100]},
    }
    if cfg.curriculum:
        train = _with_curriculum(cfg, train, manifest, batch_size, eval_batch_size, device, progress)
    names = _class_names(cfg, subset.classes)
    return DataBundle(train, heldout, val, len(subset.classes), names, manifest, caches)


def _with_curriculum(cfg: DataConfig, train: Loader, manifest: dict, batch_size: int,
                     eval_batch_size: int, device: str, progress: bool | None):
    """``train`` behind the curriculum's stages; each stage is a whole data config of its own
    (generated, cached and split like any other), of which only the training part is used. The
    manifest lists every stage's images."""
    from mvlab.data.loaders import CurriculumLoader

    stages, described = [], []
    for (epochs, stage_cfg), stage in zip(cfg.stages(), cfg.curriculum, strict=True):
        bundle = build_data(stage_cfg, batch_size, eval_batch_size, device, progress=progress)
        stages.append((epochs, bundle.train))
        # The pool's root names its task definition (the subset id does not carry the knobs).
        described.append({**stage, "root": bundle.manifest["root"],
                          "cache": bundle.manifest["cache"],
                          "counts": {"train": bundle.manifest["counts"]["train"]}})
    manifest["curriculum"] = described
    return CurriculumLoader(stages, train)


def _root_tag(root: Path) -> str:
    """A readable prefix for cache folder names (the key hash makes them unique)."""
    tag = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in root.name)[:40]
    return tag or "root"


def _class_names(cfg: DataConfig, ids: list[str]) -> list[str]:
    if cfg.dataset == "builtin" or cfg.dataset in PROCEDURAL:
        return [c.split("-", 1)[1] if "-" in c else c for c in ids]
    return list(ids)

"""``mvlab data``: inspect a dataset/subset, build its decoded cache, write out the built-in set."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mvlab.errors import DataError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="inspect subsets, build the decoded cache, export the built-in dataset",
        description="Data for proxy runs: ImageNet-style folders or the built-in Fashion-MNIST "
                    "subset, class subsets, and the decoded uint8 cache. See docs/data.md.")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    info = sub.add_parser("info", help="list the classes and image counts a data config selects",
                          description="Resolve a data config without decoding anything: layout, "
                                      "classes, per-split counts and the subset manifest.")
    _add_subset_args(info)
    info.add_argument("--json", action="store_true", help="print the subset definition as JSON")
    info.set_defaults(func=_info)

    cache = sub.add_parser("cache", help="decode a subset once into the memory-mapped uint8 cache",
                           description="Decode the selected train pool and val images at the storage "
                                       "resolution into the cache that training reads. An existing "
                                       "entry with the same subset and size is reused unless --rebuild.")
    _add_subset_args(cache)
    cache.add_argument("--rebuild", action="store_true", help="decode again even if a matching entry exists")
    cache.set_defaults(func=_cache)

    mat = sub.add_parser("materialize", help="write the built-in dataset as a class-folder tree of PNGs",
                         description="Write the shipped Fashion-MNIST subset as ROOT/train/<class>/*.png "
                                     "and ROOT/val/<class>/*.png: the same tree mvlab reads it from.")
    mat.add_argument("out", type=Path, help="folder to create (must not exist)")
    mat.set_defaults(func=_materialize)

    lists = sub.add_parser("lists", help="show the shipped class lists (imagenet100, imagenette, imagewoof)")
    lists.set_defaults(func=_lists)


def _add_subset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, choices=["builtin", "folder", "imagenet"],
                   help="builtin (default without --root) or folder/imagenet (an ImageNet-style tree)")
    p.add_argument("--root", default=None, help="data root holding train/ and val/")
    p.add_argument("--classes", default="all",
                   help="all | first:N | random:N[,SEED] | imagenet100 | imagenette | imagewoof | FILE | id,id,...")
    p.add_argument("--per-class", type=int, default=None, help="cap train images per class (before held-out)")
    p.add_argument("--val-per-class", type=int, default=None, help="cap val images per class")
    p.add_argument("--heldout-fraction", type=float, default=0.1, help="share of the train pool held out")
    p.add_argument("--seed", type=int, default=0, help="data seed: caps, held-out split, augmentation")
    p.add_argument("--resolution", type=int, default=64, help="proxy training resolution (px)")
    p.add_argument("--crop-pct", type=float, default=0.875, help="eval center-crop fraction")
    p.add_argument("--storage-resolution", type=int, default=None,
                   help="side of the cached squares (default: resolution / crop-pct)")
    p.add_argument("--val-labels", default=None, help="labels file for a flat val/ folder")
    p.add_argument("--cache-dir", default=None, help="cache location (default $MVLAB_CACHE or ~/.cache/mvlab)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (0: up to 8, one per core)")


def _config(args):
    from mvlab.data import DataConfig

    dataset = args.dataset or ("folder" if args.root else "builtin")
    return DataConfig(dataset=dataset, root=args.root, classes=args.classes, per_class=args.per_class,
                      val_per_class=args.val_per_class, heldout_fraction=args.heldout_fraction,
                      seed=args.seed, resolution=args.resolution, crop_pct=args.crop_pct,
                      storage_resolution=args.storage_resolution, val_labels=args.val_labels,
                      cache_dir=args.cache_dir, num_workers=args.workers)


def _info(args) -> int:
    from mvlab.data import select_subset
    from mvlab.data.subsets import stratified_split, subset_id

    cfg = _config(args)
    subset = select_subset(cfg)
    import numpy as np
    labels = np.array([label for _, label in subset.pool], dtype=np.int64)
    train_rows, held_rows = stratified_split(labels, cfg.heldout_fraction, cfg.seed)
    summary = {"subset_id": subset_id(subset.definition), **subset.definition, "root": str(subset.root),
               "counts": {"train": int(train_rows.size), "heldout": int(held_rows.size), "val": len(subset.val)},
               "storage_resolution": cfg.stored_side}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    classes = subset.classes
    shown = ", ".join(classes[:8]) + (f", ... ({len(classes)} in all)" if len(classes) > 8 else "")
    print(f"root        {subset.root}")
    print(f"classes     {len(classes)} from {subset.definition['classes_spec']!r}: {shown}")
    if subset.definition["class_list"]:
        print(f"class list  {subset.definition['class_list']} (sha256 {subset.definition['class_list_sha256'][:16]})")
    c = summary["counts"]
    print(f"images      train {c['train']}  heldout {c['heldout']}  val {c['val']}  (val layout: "
          f"{subset.definition['val_layout']})")
    print(f"subset id   {summary['subset_id']}  (seed {cfg.seed}, per_class {cfg.per_class}, "
          f"val_per_class {cfg.val_per_class})")
    return 0


def _cache(args) -> int:
    from mvlab.data import select_subset
    from mvlab.data.bundle import _root_tag
    from mvlab.data.cache import build_or_open
    from mvlab.data.config import resolve_cache_dir
    from mvlab.data.subsets import require_every_class

    cfg = _config(args)
    subset = select_subset(cfg)
    cache_dir = resolve_cache_dir(cfg)
    for name, items in (("train", subset.pool), ("val", subset.val)):
        start = time.perf_counter()
        entry = build_or_open(cache_dir, f"{_root_tag(subset.root)}-{name}", subset.root, items,
                              cfg.stored_side, workers=cfg.num_workers, progress=True, rebuild=args.rebuild)
        seconds = time.perf_counter() - start
        size = (entry.path / "images.npy").stat().st_size / 2**20
        action = f"built in {seconds:.1f}s ({len(items) / max(seconds, 1e-9):.0f} img/s)" if entry.built else "reused"
        print(f"{name:5s} {len(entry)} images {cfg.stored_side}px, {size:.1f} MiB, {action}: {entry.path}")
        if entry.skipped:
            print(f"      skipped {len(entry.skipped)} undecodable file(s), e.g. {entry.skipped[0]}")
        require_every_class(entry.labels, subset.classes, name, entry.skipped)
    return 0


def _materialize(args) -> int:
    from mvlab.data.builtin import builtin_arrays, write_tree

    if args.out.exists():
        raise DataError(f"{args.out} already exists: choose a new folder")
    write_tree(args.out, builtin_arrays())
    print(f"wrote the built-in dataset to {args.out} (use: --root {args.out})")
    return 0


def _lists(args) -> int:
    from mvlab.data import shipped_lists
    from mvlab.data.subsets import read_class_list

    for name, path in shipped_lists().items():
        print(f"{name:12s} {len(read_class_list(path)):4d} classes  {path}")
    return 0

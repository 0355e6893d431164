"""Data for proxy runs: ImageNet-style folders, subsets, the decoded cache, the built-in set.

Public API (docs/DESIGN.md, "Contract: data")::

    from mvlab.data import DataConfig, build_data
    bundle = build_data(DataConfig(dataset="builtin"), batch_size=128)
    for epoch in range(epochs):
        bundle.train.set_epoch(epoch)          # order + augmentation = f(seed, epoch)
        for images, labels in bundle.train: ...
    bundle.heldout, bundle.val, bundle.num_classes, bundle.manifest, bundle.skipped
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mvlab.lazy import lazy_exports

# Public name -> submodule, imported on first access (PEP 562): the loaders need torch, while
# DataConfig and the class lists do not, and the study schema and ``mvlab data lists`` want
# only those.
_LAZY = {
    **dict.fromkeys(["DataBundle", "Subset", "build_data", "data_root", "select_subset"],
                    "bundle"),
    **dict.fromkeys(["DataConfig", "default_cache_dir"], "config"),
    "shipped_lists": "subsets",
}

if TYPE_CHECKING:
    from mvlab.data.bundle import DataBundle, Subset, build_data, data_root, select_subset
    from mvlab.data.config import DataConfig, default_cache_dir
    from mvlab.data.subsets import shipped_lists

__all__ = ["DataBundle", "DataConfig", "Subset", "build_data", "data_root", "default_cache_dir",
           "select_subset", "shipped_lists"]


__getattr__, __dir__ = lazy_exports(globals(), {n: f".{m}" for n, m in _LAZY.items()})

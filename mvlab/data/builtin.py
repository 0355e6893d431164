"""The built-in dataset: a Fashion-MNIST subset shipped inside the package (offline, MIT).

It is not read through a separate path: on first use it is written once as an ImageNet-style
class-folder tree of PNG files (``train/<k>-<name>/*.png``, ``val/<k>-<name>/*.png``) under the
cache directory, and from there it is an ordinary ``folder`` dataset. See
mvlab/data/builtin/fashion_mnist/README.md for how the arrays were made."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from mvlab.errors import DataError
from mvlab.safety import check_trusted, private_dir

BUILTIN_DIR = Path(__file__).with_name("builtin") / "fashion_mnist"
ARRAYS = BUILTIN_DIR / "fashion_mnist_subset.npz"


def builtin_arrays() -> dict[str, np.ndarray]:
    """The shipped arrays: train/test images (N, 28, 28) uint8, labels, class names."""
    if not ARRAYS.is_file():
        raise DataError(f"the built-in dataset file {ARRAYS} is missing: reinstall mvlab, or "
                        f"regenerate it with scripts/make_builtin_fashion_mnist.py")
    with np.load(ARRAYS) as data:
        return {k: data[k] for k in data.files}


def class_folder_names(class_names) -> list[str]:
    """``<index>-<name>`` so the sorted folder order is the original label order."""
    width = len(str(len(class_names) - 1))
    return [f"{i:0{width}d}-{name}" for i, name in enumerate(class_names)]


def materialize(cache_dir: str | Path) -> Path:
    """Write the built-in set as a class-folder tree (once) and return its root.

    The folder name carries a hash of the shipped file, so a new version gets a new tree."""
    digest = hashlib.sha256(ARRAYS.read_bytes()).hexdigest()[:16] if ARRAYS.is_file() else "missing"
    root = Path(cache_dir) / "builtin" / f"fashion_mnist-{digest}"
    return write_once(root, lambda out: write_tree(out, builtin_arrays()), digest)


def write_once(root: Path, write: Callable[[Path], None], stamp: str) -> Path:
    """``root``, written by ``write(folder)`` unless a complete tree is already there.

    The tree is written under a temporary name and renamed into place when complete, so a
    crashed or concurrent writer never leaves a half tree where a reader would use it."""
    # The decoded cache is built from this tree: the same ownership rule (docs/security.md).
    if (root / ".complete").is_file():
        check_trusted(root.parent, "the built-in data cache")
        check_trusted(root, "the built-in data tree")
        return root
    private_dir(root.parent, "the built-in data cache")
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        write(tmp)
        (tmp / ".complete").write_text(stamp + "\n")
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / ".complete").is_file():  # an incomplete leftover, not a racing writer
                shutil.rmtree(root, ignore_errors=True)
                os.rename(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def write_tree(out: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``train`` and ``test`` (as ``val``) arrays as ``<split>/<class folder>/<n>.png``."""
    folders = class_folder_names([str(c) for c in arrays["class_names"]])
    for split, prefix in (("train", "train"), ("val", "test")):
        images, labels = arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"]
        for folder in folders:
            (out / split / folder).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(np.ascontiguousarray(img)).save(out / split / folders[int(label)] / f"{i:05d}.png",
                                                compress_level=1)

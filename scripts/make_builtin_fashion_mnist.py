"""Make mvlab's built-in dataset: a compact, real Fashion-MNIST subset committed with the code.

Source: Debian's ``dataset-fashion-mnist`` package (MIT/Expat licence, Zalando SE), which installs
the original idx files under /usr/share/datasets/fashion-mnist/:

    apt-get install -y dataset-fashion-mnist
    python scripts/make_builtin_fashion_mnist.py            # writes mvlab/data/builtin/fashion_mnist/

Selection (deterministic, no randomness): for every class, the first ``--train-per-class`` images
of the official training file and the first ``--test-per-class`` images of the official test file,
in file order. Images are kept as the original 28x28 uint8 grayscale pixels; labels are the
original class indices 0..9. The output is a compressed ``.npz`` with arrays
``train_images`` (N,28,28) uint8, ``train_labels`` (N,) uint8, ``test_images``, ``test_labels``
and ``class_names``; ``SOURCE.json`` records the source files' SHA-256 and the selection.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np

CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "mvlab" / "data" / "builtin" / "fashion_mnist"


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped idx file (the MNIST container format: magic, dims, big-endian uint8 data)."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not a uint8 idx file")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` examples of each class, in file order."""
    picked = [np.flatnonzero(labels == c)[:per_class] for c in range(len(CLASS_NAMES))]
    if any(len(p) < per_class for p in picked):
        raise ValueError(f"a class has fewer than {per_class} examples")
    return np.sort(np.concatenate(picked))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()

    files = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
             "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}
    raw = {key: read_idx(args.source / name) for key, name in files.items()}
    train = first_per_class(raw["train_labels"], args.train_per_class)
    test = first_per_class(raw["test_labels"], args.test_per_class)

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out / "fashion_mnist_subset.npz",
        train_images=raw["train_images"][train], train_labels=raw["train_labels"][train],
        test_images=raw["test_images"][test], test_labels=raw["test_labels"][test],
        class_names=np.array(CLASS_NAMES),
    )
    source = {
        "dataset": "Fashion-MNIST (Zalando Research), via Debian package dataset-fashion-mnist",
        "licence": "MIT (Expat), Copyright 2017 Zalando SE; see LICENSE",
        "selection": f"first {args.train_per_class} train and {args.test_per_class} test images per class, file order",
        "class_names": CLASS_NAMES,
        "source_sha256": {name: sha256(args.source / name) for name in files.values()},
        "counts": {"train": int(train.size), "test": int(test.size)},
    }
    (args.out / "SOURCE.json").write_text(json.dumps(source, indent=2) + "\n")
    size = (args.out / "fashion_mnist_subset.npz").stat().st_size
    print(f"wrote {args.out} ({train.size} train, {test.size} test images, {size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

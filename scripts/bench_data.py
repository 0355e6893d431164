"""Images/s of the direct JPEG path vs the decoded cache path, on a generated ImageNet-like tree.

    python scripts/bench_data.py                       # 10 classes x 60 images of 500x375, 64 px
    python scripts/bench_data.py --resolution 128 --images-per-class 100 --workers 0 2

The tree holds JPEGs of ImageNet's typical size (500x375, quality 90, textured content so the
files are ~100 KB like real photos). Measured: one training epoch through
``DirectLoader`` (decode + timm random-resized-crop/flip per image, with N worker processes),
the one-off cache build, and one training epoch through ``CachedLoader`` (uint8 memmap gather +
batched crop/flip). Prints images/s and the ratio; no model is involved.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mvlab.data import DataConfig, select_subset
from mvlab.data.cache import build_or_open
from mvlab.data.loaders import CachedLoader, DirectLoader


def make_jpeg_tree(root: Path, classes: int, per_class: int, size=(500, 375), seed: int = 0) -> float:
    """Write root/train/<cls>/*.JPEG and a small root/val; returns the mean file size in KB."""
    rng = np.random.default_rng(seed)
    w, h = size
    sizes = []
    for split, n in (("train", per_class), ("val", 2)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                coarse = rng.integers(0, 256, (h // 25, w // 25, 3), dtype=np.uint8)
                img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int16)
                img = np.clip(img + rng.normal(0, 14, img.shape), 0, 255).astype(np.uint8)
                path = folder / f"img_{i:04d}.JPEG"
                Image.fromarray(img).save(path, quality=90)
                sizes.append(path.stat().st_size)
    return float(np.mean(sizes)) / 1024


def images_per_second(loader, epochs: int = 1, sync: str = "cpu") -> float:
    count, start = 0, time.perf_counter()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, _ in loader:
            count += images.shape[0]
    if sync.startswith("cuda"):
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--images-per-class", type=int, default=60)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                        help="DataLoader worker counts to try for the JPEG path")
    parser.add_argument("--cache-epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="where the cache path's crop/flip runs (cpu, cuda)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        kb = make_jpeg_tree(root, args.classes, args.images_per_class)
        cfg = DataConfig(dataset="folder", root=str(root), cache_dir=str(Path(tmp) / "cache"),
                         resolution=args.resolution, heldout_fraction=0.0)
        items = select_subset(cfg).pool
        print(f"tree: {len(items)} train JPEGs, 500x375, mean {kb:.0f} KB; resolution {args.resolution}, "
              f"batch {args.batch_size}, torch threads {torch.get_num_threads()}")
        rates = {}
        for workers in args.workers:
            loader = DirectLoader(root, items, args.batch_size, train=True, resolution=args.resolution,
                                  num_workers=workers)
            rates[f"jpeg, {workers} workers"] = images_per_second(loader)
        start = time.perf_counter()
        entry = build_or_open(cfg.cache_dir, "bench", root, items, cfg.stored_side, progress=False)
        rates["cache build (one-off)"] = len(items) / (time.perf_counter() - start)
        loader = CachedLoader(entry.images, entry.labels, np.arange(len(entry)), args.batch_size,
                              train=True, resolution=args.resolution, device=args.device)
        images_per_second(loader)  # warm-up (page cache, CUDA context)
        rates[f"cache ({args.device})"] = images_per_second(loader, args.cache_epochs, sync=args.device)
        best_jpeg = max(v for k, v in rates.items() if k.startswith("jpeg"))
        for name, rate in rates.items():
            print(f"{name:24s} {rate:9.0f} images/s")
        print(f"cache / best JPEG path: {rates[f'cache ({args.device})'] / best_jpeg:.1f}x")


if __name__ == "__main__":
    main()

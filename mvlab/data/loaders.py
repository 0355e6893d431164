"""Loaders: iterables of ``(images float32 NCHW normalised, labels int64)`` batches.

``CachedLoader`` reads the decoded uint8 cache; ``DirectLoader`` decodes image files on the fly
(timm transforms, optional worker processes). Both shuffle and augment as a pure function of
``(seed, epoch)``: call ``set_epoch(epoch)`` before iterating (iterating without it moves on to
the next epoch), and ``batches(epoch, start=k)`` resumes mid-epoch at batch ``k`` exactly.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from mvlab.data.folders import NAMED_UNDECODABLE, BadImage, load_rgb, warn_undecodable
from mvlab.data.subsets import stable_seed
from mvlab.data.transforms import (
    Normalize,
    center_crop,
    crop_flip_resize,
    pil_transform,
    sample_crop_boxes,
)
from mvlab.errors import DataError

log = logging.getLogger("mvlab.data")
Batch = tuple[torch.Tensor, torch.Tensor]


class _EpochLoader:
    """Shared epoch bookkeeping: order and per-epoch generator derive from (seed, epoch)."""

    def __init__(self, n: int, batch_size: int, train: bool, seed: int, drop_last: bool | None):
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.n = n
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        # Training drops the last partial batch (a batch of 1 breaks BatchNorm); eval keeps all.
        self.drop_last = train if drop_last is None else drop_last
        self.epoch = 0

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return (self.n + self.batch_size - 1) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its order and augmentation are fixed by it)."""
        self.epoch = int(epoch)

    def generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(stable_seed(self.seed, "epoch", epoch))

    def order(self, epoch: int) -> torch.Tensor:
        if not self.train:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=self.generator(epoch))

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        self.epoch += 1
        return self.batches(epoch)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        raise NotImplementedError


class CachedLoader(_EpochLoader):
    """Batches from a decoded cache: uint8 gather -> (device) -> crop/flip or center crop -> float.

    ``rows`` are the cache rows this split uses (e.g. the train part of the train pool)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, rows: Sequence[int], batch_size: int, *,
                 train: bool, resolution: int, seed: int = 0, device: str | torch.device = "cpu",
                 scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip: float = 0.5,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), drop_last: bool | None = None):
        self.rows = np.asarray(rows, dtype=np.int64)
        super().__init__(len(self.rows), batch_size, train, seed, drop_last)
        self.images = images
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64)[self.rows])
        self.resolution = resolution
        self.device = torch.device(device)
        self.scale, self.ratio, self.hflip = tuple(scale), tuple(ratio), hflip
        self.normalize = Normalize(mean, std)
        self.skipped = 0  # decoding happened when the cache was built; nothing is skipped here

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        order = self.order(epoch)
        side = self.images.shape[1]
        if self.train:
            # Drawn for the whole epoch up front, so batch k's parameters do not depend on
            # whether batches 0..k-1 were produced (exact mid-epoch resume).
            g = torch.Generator().manual_seed(stable_seed(self.seed, "augment", epoch))
            boxes = sample_crop_boxes(self.n, side, side, self.scale, self.ratio, g)
            flips = torch.rand(self.n, generator=g) < self.hflip
        pin = self.device.type == "cuda"
        for b in range(start, len(self)):
            # Sorted within the batch (order inside a batch does not matter to training) so the
            # memmap is read front to back; self.rows is sorted, so rows come out sorted too.
            idx = order[b * self.batch_size:(b + 1) * self.batch_size].sort().values
            x = torch.from_numpy(self.images[self.rows[idx.numpy()]])
            if pin:
                x = x.pin_memory()
            x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            if self.train:
                x = crop_flip_resize(x, boxes[idx], flips[idx], self.resolution)
            else:
                x = center_crop(x, self.resolution)
            yield self.normalize(x).contiguous(), self.labels[idx].to(self.device, non_blocking=True)


class _FileDataset(torch.utils.data.Dataset):
    """(path, label) items decoded with PIL; a bad file yields ``None`` instead of raising."""

    def __init__(self, root: Path, items: Sequence[tuple[str, int]], transform, seed: int, train: bool):
        self.root, self.items, self.transform = root, list(items), transform
        self.seed, self.train, self.epoch = seed, train, 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        rel, label = self.items[i]
        try:
            img = load_rgb(self.root / rel)
        except BadImage as exc:
            return None, label, str(exc), rel
        if not self.train:
            return self.transform(img), label, None, rel
        # timm's crop draws from `random` and the flip from torch: seed both per sample so the
        # augmentation is a function of (seed, epoch, item) whatever the worker count, and put
        # the caller's global RNG states back (with 0 workers this runs in the trainer's process).
        state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                s = stable_seed(self.seed, "augment", self.epoch, i)
                random.seed(s)
                torch.manual_seed(s)
                return self.transform(img), label, None, rel
        finally:
            random.setstate(state)


def _collate(samples):
    good = [(x, y) for x, y, err, _ in samples if err is None]
    bad = [(rel, err) for _, _, err, rel in samples if err is not None]
    if not good:
        return None, None, bad
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good], dtype=torch.int64), bad


class DirectLoader(_EpochLoader):
    """Batches decoded from image files each epoch (no cache): timm transforms, ``num_workers``
    processes. Undecodable files are dropped from their batch, logged, and counted in
    ``skipped`` / ``skipped_files``."""

    def __init__(self, root: str | Path, items: Sequence[tuple[str, int]], batch_size: int, *, train: bool,
                 resolution: int, crop_pct: float = 0.875, seed: int = 0, device="cpu", num_workers: int = 0,
                 scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip: float = 0.5,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), drop_last: bool | None = None):
        super().__init__(len(items), batch_size, train, seed, drop_last)
        transform = pil_transform(train, resolution, crop_pct, tuple(scale), tuple(ratio), hflip, mean, std)
        self.dataset = _FileDataset(Path(root), items, transform, seed, train)
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.skipped_files: dict[str, str] = {}

    @property
    def skipped(self) -> int:
        return len(self.skipped_files)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        self.dataset.epoch = epoch
        order = self.order(epoch).tolist()
        batches = [order[b * self.batch_size:(b + 1) * self.batch_size] for b in range(start, len(self))]
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=batches, num_workers=self.num_workers, collate_fn=_collate,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            # Its own generator: DataLoader otherwise draws its base seed from the global RNG.
            generator=torch.Generator().manual_seed(stable_seed(self.seed, "loader", epoch)))
        known = len(self.skipped_files)
        for images, labels, bad in loader:
            for rel, err in bad:
                if rel not in self.skipped_files:
                    self.skipped_files[rel] = err
                    # the first few by name as they turn up; the rest in one line at the end
                    if len(self.skipped_files) <= NAMED_UNDECODABLE:
                        log.warning("warning: skipped undecodable image %s", err)
            if images is None:
                continue
            yield (images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))
        if len(self.skipped_files) > max(known, NAMED_UNDECODABLE):
            warn_undecodable(list(self.skipped_files), self.dataset.root,
                             already_named=NAMED_UNDECODABLE)


class CurriculumLoader:
    """Training batches whose source changes with the epoch (``data.curriculum``).

    ``stages`` is a list of ``(epochs, loader)``: the first stage serves epochs ``0..e1-1``, the
    next the following ones, and ``main`` every epoch after the last stage. Every source has the
    same number of batches, so the learning-rate schedule, which counts steps per epoch, is the
    one a run without a curriculum follows. Order and augmentation stay a function of
    ``(seed, epoch)`` in each source: a resumed run sees the same batches."""

    def __init__(self, stages: Sequence[tuple[int, _EpochLoader]], main: _EpochLoader):
        self.main = main
        self.loaders = [loader for _, loader in stages]
        self.ends = np.cumsum([int(epochs) for epochs, _ in stages]).tolist()
        lengths = sorted({len(loader) for loader in self.loaders})
        if lengths != [len(main)]:
            raise DataError(f"data.curriculum: its stages give {lengths} training batches an "
                            f"epoch and the task {len(main)}; every stage must have the same "
                            f"number of training images (data.per_class, heldout_fraction)")
        self.epoch = 0

    @property
    def stage_epochs(self) -> int:
        return self.ends[-1] if self.ends else 0

    @property
    def batch_size(self) -> int:
        return self.main.batch_size

    @property
    def skipped(self) -> int:
        return sum(getattr(loader, "skipped", 0) for loader in (*self.loaders, self.main))

    def __len__(self) -> int:
        return len(self.main)

    def source(self, epoch: int) -> _EpochLoader:
        """The loader that serves ``epoch``."""
        for end, loader in zip(self.ends, self.loaders, strict=True):
            if epoch < end:
                return loader
        return self.main

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        self.epoch += 1
        return self.batches(epoch)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        return self.source(epoch).batches(epoch, start)

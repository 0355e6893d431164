"""A DataBundle whose training loader misbehaves at one (epoch, step): a NaN pixel in that batch,
or a KeyboardInterrupt; it counts the batches it handed out, so a test can tell where training
stopped."""
from __future__ import annotations


class Faulty:
    def __init__(self, bundle, epoch: int, step: int, action: str = "nan"):
        self.bundle, self.heldout, self.val = bundle, bundle.heldout, bundle.val
        self.num_classes, self.manifest = bundle.num_classes, bundle.manifest
        self.train = _Loader(bundle.train, (epoch, step), action)


class _Loader:
    def __init__(self, inner, at: tuple[int, int], action: str):
        if action not in ("nan", "interrupt"):
            raise ValueError(f"action {action!r}: nan or interrupt")
        self.inner, self.at, self.action, self.epoch, self.yielded = inner, at, action, 0, 0

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __iter__(self):
        for step, (x, y) in enumerate(self.inner):
            if (self.epoch, step) == self.at:
                if self.action == "interrupt":
                    raise KeyboardInterrupt
                x = x.clone()
                x[0, 0, 0, 0] = float("nan")
            self.yielded += 1
            yield x, y

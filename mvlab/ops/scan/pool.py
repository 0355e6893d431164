"""A small pool of large CPU tensors recycled across calls of the chunked scan.

On the CPU, the first touch of freshly mapped memory costs a page fault per 4 KiB, which for the
scan's multi-megabyte intermediates costs more than the arithmetic done in them; glibc returns
such allocations to the OS on free, so every call would pay again. The pool keeps them instead.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import torch


class BufferPool:
    """Large scratch and saved-state tensors recycled across calls (CPU only).

    ``take`` hands out a buffer and a generation number; ``reclaim`` tells whether a buffer was
    handed out again since (its contents may then be overwritten). Free buffers are kept up to
    ``max_free_bytes`` in all, least recently used shapes dropped first, so a sweep that trains
    many different widths in one process does not accumulate them."""

    def __init__(self, max_free_bytes: int = 1 << 30) -> None:
        self._free: OrderedDict[tuple, list[torch.Tensor]] = OrderedDict()
        self._free_bytes = 0
        self._generation: dict[int, int] = {}
        self._lock = threading.Lock()
        self.max_free_bytes = max_free_bytes

    @staticmethod
    def _key(buffer: torch.Tensor) -> tuple:
        return tuple(buffer.shape), buffer.dtype

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, int]:
        if like.device.type != "cpu":  # the CUDA caching allocator already recycles memory
            return torch.empty(shape, dtype=like.dtype, device=like.device), 0
        with self._lock:
            free = self._free.get((tuple(shape), like.dtype))
            buffer = free.pop() if free else None
            if buffer is not None:
                self._free_bytes -= buffer.nbytes
        if buffer is None:
            buffer = torch.empty(shape, dtype=like.dtype)
        with self._lock:
            generation = self._generation.get(buffer.data_ptr(), 0) + 1
            self._generation[buffer.data_ptr()] = generation
        return buffer, generation

    def reclaim(self, buffer: torch.Tensor, generation: int) -> bool:
        """Whether ``buffer`` still holds what it held at ``take`` time; if so it is taken out of
        the free list again (a backward run twice hands its saved states back twice)."""
        if buffer.device.type != "cpu":
            return True
        with self._lock:
            if self._generation.get(buffer.data_ptr()) != generation:
                return False
            free = self._free.get(self._key(buffer), [])
            if any(b is buffer for b in free):
                free[:] = [b for b in free if b is not buffer]
                self._free_bytes -= buffer.nbytes
            return True

    def give(self, *buffers: torch.Tensor) -> None:
        for buffer in buffers:
            if buffer.device.type != "cpu":
                continue
            with self._lock:
                key = self._key(buffer)
                free = self._free.setdefault(key, [])
                self._free.move_to_end(key)
                if any(b is buffer for b in free):
                    continue
                free.append(buffer)
                self._free_bytes += buffer.nbytes
                while self._free_bytes > self.max_free_bytes and self._free:
                    oldest_key, oldest = next(iter(self._free.items()))
                    if not oldest:
                        del self._free[oldest_key]
                        continue
                    self._free_bytes -= oldest.pop(0).nbytes

    @property
    def free_bytes(self) -> int:
        return self._free_bytes

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self._free_bytes = 0


POOL = BufferPool()


def release_workspace() -> None:
    """Free the buffers the chunked scan keeps for reuse between calls (at most 1 GiB)."""
    POOL.clear()

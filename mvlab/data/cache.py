"""The decoded cache: a subset's images decoded once into a memory-mapped uint8 array.

One cache entry is a folder ``<cache_dir>/decoded/<name>-<key>/`` holding

* ``images.npy``: (N, S, S, 3) uint8, each image resized (shorter side S) and center cropped;
* ``labels.npy``: (N,) int64 class index; ``sources.npy``: (N,) int64 row in the item list;
* ``manifest.json``: what was decoded (the key fields), the skipped files and the sha256 of
  each array file (``checksums``).

The key is a hash of the root, the exact (file, label) list, the side S and the format version,
so a different subset or resolution is a different entry and a matching one is reused as is.
An entry is built in a temporary folder and renamed into place only when complete, so a
crashed or concurrent build never leaves a half-written entry where a reader would use it.

A reused entry is trusted data, so the cache follows the kernel cache's rule (``mvlab.safety``):
``<cache_dir>/decoded`` is made private (0700), and a folder or file there that belongs to
another user or that group/others can write is refused with one line. An entry whose arrays do
not match the checksums in its manifest (damaged, or changed after the build) is rebuilt.
Checking costs one sha256 pass over the arrays per open: 0.1-0.3 s for the built-in set at
64 px (112 MB; benchmarks/cache_checksum_cost.py, docs/security.md).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from mvlab.data.folders import BadImage, load_rgb_square, warn_undecodable
from mvlab.safety import check_trusted, private_dir

FORMAT_VERSION = 1
ARRAYS = ("images.npy", "labels.npy", "sources.npy")
log = logging.getLogger("mvlab.data")


@dataclass
class DecodedCache:
    """An opened cache entry: ``images`` is a read-only memmap; rows are the decodable items."""

    path: Path
    images: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    manifest: dict
    skipped: list[str] = field(default_factory=list)
    built: bool = False  # True when this call decoded it, False when an existing entry was reused

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def cache_key(root: str | Path, items: Sequence[tuple[str, int]], side: int) -> str:
    h = hashlib.sha256()
    h.update(f"v{FORMAT_VERSION}\x1f{Path(root).resolve()}\x1f{side}\x1f".encode())
    for rel, label in items:
        h.update(f"{rel}\x1e{label}\x1f".encode())
    return h.hexdigest()[:20]


def entry_path(cache_dir: str | Path, name: str, root: str | Path,
               items: Sequence[tuple[str, int]], side: int) -> Path:
    return Path(cache_dir) / "decoded" / f"{name}-{cache_key(root, items, side)}"


def open_cache(path: Path) -> DecodedCache | None:
    """Open a complete entry, or ``None`` when it is absent, unreadable or does not match its
    checksums (then rebuild it). An entry someone else could have written raises
    ``UnsafePathError``."""
    if not path.is_dir():
        return None
    for item in (path, *(path / name for name in ("manifest.json", *ARRAYS))):
        if item.exists():
            check_trusted(item, "decoded-cache entry")
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("checksums") != checksums(path):
            if "checksums" in manifest:
                log.warning("decoded cache %s does not match its recorded checksums (damaged or "
                            "changed after it was built); rebuilding it", path)
            return None
        images = np.load(path / "images.npy", mmap_mode="r")
        labels = np.load(path / "labels.npy")
        sources = np.load(path / "sources.npy")
    except (OSError, ValueError, AttributeError):
        return None
    if manifest.get("format_version") != FORMAT_VERSION or images.shape[0] != labels.shape[0]:
        return None
    return DecodedCache(path, images, labels, sources, manifest, list(manifest.get("skipped", [])))


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of each array file of an entry (what its manifest records at build time)."""
    out = {}
    for name in ARRAYS:
        digest = hashlib.sha256()
        with open(folder / name, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
        out[name] = digest.hexdigest()
    return out


def build_or_open(cache_dir: str | Path, name: str, root: str | Path, items: Sequence[tuple[str, int]],
                  side: int, workers: int = 0, progress: bool | None = None,
                  rebuild: bool = False) -> DecodedCache:
    """Return the cache entry for ``items`` (paths relative to ``root``, class index), decoding
    them at ``side`` x ``side`` if no complete entry with the same key exists yet.

    Undecodable files are skipped, listed in the manifest and logged (the first few by name, then
    one summary line); never an exception."""
    path = entry_path(cache_dir, name, root, items, side)
    expected = {"format_version": FORMAT_VERSION, "root": str(Path(root).resolve()), "side": side,
                "items": len(items), "key": path.name.rsplit("-", 1)[1]}
    private_dir(path.parent, "the decoded-data cache")
    if not rebuild:
        existing = open_cache(path)
        if _matches(existing, expected):
            return existing
    _remove_abandoned(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        skipped = _decode_into(tmp, root, items, side, workers, progress, label=name)
        for name_ in ARRAYS:  # umask 002 would leave them group-writable, and so refused
            os.chmod(tmp / name_, 0o600)
        manifest = dict(expected, name=name, count=len(items) - len(skipped), skipped=skipped,
                        checksums=checksums(tmp))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        os.chmod(tmp / "manifest.json", 0o600)
        _install(tmp, path, expected, replace=rebuild)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    opened = open_cache(path)
    if not _matches(opened, expected):
        raise RuntimeError(f"decoded cache {path} could not be opened right after it was built")
    opened.built = True
    # When a class kept no image, every caller stops on require_every_class's one line, which
    # gives the count and the first file already; naming files first would bury it.
    if opened.skipped and {label for _, label in items} <= set(np.unique(opened.labels).tolist()):
        warn_undecodable(opened.skipped, root, str(path / "manifest.json"))
    return opened


def _remove_abandoned(folder: Path, older_than_s: float = 6 * 3600) -> None:
    """Delete temporary/stale entries left by builds that died (old enough not to be running)."""
    now = time.time()
    for entry in folder.glob(".*"):
        if (".tmp-" in entry.name or ".stale-" in entry.name) and entry.is_dir():
            try:
                if now - entry.stat().st_mtime > older_than_s:
                    shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                pass


def _matches(cache: DecodedCache | None, expected: dict) -> bool:
    return cache is not None and all(cache.manifest.get(k) == v for k, v in expected.items())


def _install(tmp: Path, path: Path, expected: dict, replace: bool) -> None:
    """Rename the finished ``tmp`` into place. An existing valid entry (a concurrent build of
    the same key) is kept unless ``replace``; an invalid one is moved aside and deleted."""
    try:
        os.rename(tmp, path)
        return
    except OSError:
        if not replace and _matches(open_cache(path), expected):
            return
    stale = path.with_name(f".{path.name}.stale-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        os.rename(path, stale)  # readers holding a memmap keep their (unlinked) file
    except OSError:
        pass
    try:
        os.rename(tmp, path)
    except OSError:
        pass  # lost a race to another writer; the caller checks what is in place
    shutil.rmtree(stale, ignore_errors=True)


def _decode_one(job: tuple[str, int]) -> np.ndarray | str:
    path, side = job
    try:
        return np.asarray(load_rgb_square(path, side), dtype=np.uint8)
    except BadImage as exc:
        return str(exc)


def _decode_into(tmp: Path, root: str | Path, items: Sequence[tuple[str, int]], side: int,
                 workers: int, progress: bool | None, label: str) -> list[str]:
    from tqdm.auto import tqdm

    root = Path(root)
    n = len(items)
    images = np.lib.format.open_memmap(tmp / "images.part.npy", mode="w+", dtype=np.uint8,
                                       shape=(n, side, side, 3))
    good = np.zeros(n, dtype=bool)
    skipped: list[str] = []
    jobs = [(str(root / rel), side) for rel, _ in items]
    workers = workers if workers > 0 else min(8, os.cpu_count() or 1)
    bar = tqdm(total=n, desc=f"decoding {label} ({side}px)", unit="img",
               disable=not progress if progress is not None else None, leave=False)
    pool = get_context("fork").Pool(workers) if workers > 1 and n >= 512 else None
    try:
        results = pool.imap(_decode_one, jobs, chunksize=64) if pool else map(_decode_one, jobs)
        for i, result in enumerate(results):
            if isinstance(result, str):
                skipped.append(items[i][0])
                log.debug("undecodable: %s", result)
            else:
                images[i] = result
                good[i] = True
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    labels = np.array([label for _, label in items], dtype=np.int64)
    rows = np.flatnonzero(good)
    if rows.size == n:
        images.flush()
        del images
        os.replace(tmp / "images.part.npy", tmp / "images.npy")
    else:  # compact: rare (only when files were skipped), so a second copy is fine
        final = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                          shape=(rows.size, side, side, 3))
        for start in range(0, rows.size, 4096):
            final[start:start + 4096] = images[rows[start:start + 4096]]
        final.flush()
        del final, images
        os.remove(tmp / "images.part.npy")
    np.save(tmp / "labels.npy", labels[rows])
    np.save(tmp / "sources.npy", rows.astype(np.int64))
    return skipped

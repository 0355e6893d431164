"""ImageNet-style image folders: find the images of a split and decode one image to RGB.

Two layouts are read (docs/data.md):

* class folders: ``root/<split>/<class_id>/<image>`` (the usual re-organised ImageNet,
  Imagenette, Imagewoof, and mvlab's materialised built-in set);
* flat val: ``root/<split>/<image>`` plus a labels file that gives each image's class id, either
  ``<file name> <class_id>`` lines (whitespace or comma separated) or Kaggle's
  ``LOC_val_solution.csv`` (``ImageId,PredictionString`` whose first word is the class id).
"""
from __future__ import annotations

import errno
import logging
import os
import re
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mvlab.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"})
LABEL_FILE_NAMES = ("val_labels.txt", "LOC_val_solution.csv")
LAYOUT_HELP = ("expected an ImageNet-style tree: ROOT/train/<class_id>/*.JPEG and "
               "ROOT/val/<class_id>/*.JPEG, or a flat ROOT/val/*.JPEG with a labels file "
               f"({' or '.join(LABEL_FILE_NAMES)} in ROOT, or data.val_labels); see docs/data.md")
# Undecodable files named one line each; past these, one summary line says how many there are
# (a real dataset can hold thousands, and a line per file buries everything else).
NAMED_UNDECODABLE = 3
log = logging.getLogger("mvlab.data")


@dataclass(frozen=True)
class SplitListing:
    """The images of one split, grouped by class id; paths are relative to ``root`` and sorted."""

    root: Path
    split: str
    layout: str  # "class-folders" or "flat+labels"
    files: dict[str, list[str]]
    # symlinks left out of ``files``, relative to ``root``: ones that lead back into a folder
    # that holds them (or to themselves), and ones whose target is missing
    loops: tuple[str, ...] = ()
    broken: tuple[str, ...] = ()

    @property
    def classes(self) -> list[str]:
        return sorted(self.files)


class BadImage(Exception):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""


def is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def list_split(root: str | Path, split: str, labels_file: str | Path | None = None) -> SplitListing:
    """List ``root/split`` in whichever supported layout it has; ``DataError`` says what is missing."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder; {LAYOUT_HELP}")
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"split folder {split_dir} is missing; {LAYOUT_HELP}")
    entries = _entries(split_dir)
    links = _LinkProblems(root)
    links.check(entries)
    class_dirs = [e for e in entries if _is_dir(e) and not e.name.startswith(".")]
    if class_dirs:
        files = {}
        for entry in class_dirs:
            inside = _entries(Path(entry.path))
            links.check(inside)
            names = [f.name for f in inside if _is_file(f) and is_image(f.name)]
            files[entry.name] = [f"{split}/{entry.name}/{n}" for n in names]
        return SplitListing(root, split, "class-folders", files, *links.found())
    images = [e.name for e in entries if _is_file(e) and is_image(e.name)]
    if not images:
        raise DataError(f"split folder {split_dir} has no class folders and no images; {LAYOUT_HELP}")
    labels_path = _find_labels_file(root, split, labels_file)
    labels = read_labels_file(labels_path)
    files: dict[str, list[str]] = {}
    unlabelled = []
    for name in images:
        label = labels.get(name) or labels.get(os.path.splitext(name)[0])
        if label is None:
            unlabelled.append(name)
            continue
        files.setdefault(label, []).append(f"{split}/{name}")
    if unlabelled:
        raise DataError(f"{len(unlabelled)} image(s) in {split_dir} have no label in {labels_path} "
                        f"(first: {unlabelled[0]}); every image of a flat split needs a line "
                        f"'<file name> <class_id>'")
    return SplitListing(root, split, "flat+labels", files, *links.found())


class _LinkProblems:
    """Symlinks a listing leaves out that the user should hear about. Listing reads one level
    of class folders, so a loop never hangs it; but a loop or a broken link is still a mistake in
    the tree (a copy made with the wrong base, a dataset moved away) that silently costs images
    or a class, so ``warn_link_problems`` names them."""

    def __init__(self, root: Path):
        self.root = root
        self.loops: list[str] = []
        self.broken: list[str] = []

    def check(self, entries: Sequence[os.DirEntry]) -> None:
        for entry in entries:
            try:
                if not entry.is_symlink():  # from the directory listing: no system call
                    continue
            except OSError:
                continue
            problem = _link_problem(entry.path)
            if problem is not None:
                rel = os.path.relpath(entry.path, self.root)
                (self.loops if problem == "loop" else self.broken).append(rel)

    def found(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(self.loops), tuple(self.broken)


def _link_problem(path: str) -> str | None:
    """"loop" for a symlink that cannot be followed because it leads back to itself (ELOOP) or
    that points at a folder holding it; "broken" for one whose target does not exist."""
    try:
        target = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "loop"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "broken"
        return None  # e.g. no permission: listing a class folder reports that itself
    if stat.S_ISDIR(target.st_mode):
        real = os.path.realpath(path)
        holder = os.path.realpath(os.path.dirname(path))
        if holder == real or holder.startswith(real.rstrip(os.sep) + os.sep):
            return "loop"
    return None


def warn_link_problems(listings: Sequence[SplitListing]) -> None:
    """One warning line per kind (symlink loops, broken symlinks) over ``listings``: the count and
    the first path, not one line per link."""
    if not listings:
        return
    root = listings[0].root
    for kind, found, fix in (
            ("symlink loop(s)", [p for x in listings for p in x.loops],
             "they lead back into their own folder; remove them"),
            ("broken symlink(s)", [p for x in listings for p in x.broken],
             "their targets are missing; fix or remove them")):
        if found:
            first = found[0]
            if kind.startswith("broken"):
                try:
                    first = f"{first} -> {os.readlink(root / first)}"
                except OSError:
                    pass
            log.warning("warning: %d %s skipped in %s (first: %s); %s", len(found), kind, root,
                        first, fix)


def warn_undecodable(skipped: Sequence[str], root: str | Path, listed_in: str | None = None,
                     already_named: int = 0) -> None:
    """Name the first ``NAMED_UNDECODABLE`` undecodable files (``skipped``: paths relative to
    ``root``, of which ``already_named`` were named before) one line each, and the rest in one
    summary line: how many, in which folder, the first, and where all are listed."""
    for rel in skipped[already_named:NAMED_UNDECODABLE]:
        log.warning("warning: skipped undecodable image %s", rel)
    if len(skipped) > NAMED_UNDECODABLE:
        log.warning("warning: %s undecodable images skipped in %s, first: %s%s",
                    f"{len(skipped):,}", Path(root) / os.path.commonpath(list(skipped)),
                    skipped[0], f" (all listed in {listed_in})" if listed_in else "")


def _entries(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder`` sorted by name; DataError when it cannot be listed (no
    permission, a symlink loop, a file where a folder should be)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot list {folder} ({exc.strerror or exc}); fix or remove it, or "
                        f"choose classes without it") from None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop, a vanished file: not a folder we can read
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _find_labels_file(root: Path, split: str, labels_file: str | Path | None) -> Path:
    if labels_file is not None:
        path = Path(labels_file).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise DataError(f"labels file {path} (data.val_labels) does not exist")
        return path
    for name in LABEL_FILE_NAMES:
        if (root / name).is_file():
            return root / name
    raise DataError(f"split folder {root / split} is flat (images, no class folders) but no labels "
                    f"file was found: looked for {', '.join(str(root / n) for n in LABEL_FILE_NAMES)}; "
                    f"pass data.val_labels=PATH or reorganise it into class folders")


_SPLIT = re.compile(r"[,\s]+")


def read_labels_file(path: Path) -> dict[str, str]:
    """Map image file name (and stem) -> class id from a labels file (formats: module doc)."""
    labels: dict[str, str] = {}
    for line_no, line in enumerate(read_text_lines(path, "labels file"), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = _SPLIT.split(line)
        if line_no == 1 and words[0].lower() in {"imageid", "filename", "file", "image"}:
            continue  # a CSV header
        if len(words) < 2:
            raise DataError(f"{path}:{line_no}: expected '<file name> <class_id>', got {line!r}")
        labels[words[0]] = words[1]
    if not labels:
        raise DataError(f"labels file {path} has no '<file name> <class_id>' lines")
    return labels


def read_text_lines(path: Path, what: str) -> list[str]:
    """The lines of a small UTF-8 text file (a labels file, a class list); DataError with the
    line of the first byte that is not UTF-8, or when the file cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{what} {path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); "
                        f"save it as UTF-8") from None


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image fully and convert it to RGB (grayscale, palette, CMYK, alpha all handled).

    Raises ``BadImage`` for anything PIL cannot decode completely, including truncated files."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's EXIF/palette chatter is not an error
            with Image.open(path) as img:
                img.load()
                return _to_rgb(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadImage(f"{path}: {exc}") from exc


def load_rgb_square(path: str | Path, side: int) -> Image.Image:
    """Decode to an RGB ``side`` x ``side`` image: shorter side resized to ``side``, center crop.

    For JPEGs libjpeg's DCT-domain downscaling (``draft``) skips most of the decode work when the
    file is much larger than ``side``; the result is still antialiased by the final resize."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                w, h = img.size
                scale = side / min(w, h)
                img.draft("RGB", (max(side, int(w * scale)), max(side, int(h * scale))))
                img.load()
                rgb = _to_rgb(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadImage(f"{path}: {exc}") from exc
    return square_resize(rgb, side)


def square_resize(img: Image.Image, side: int) -> Image.Image:
    """Resize so the shorter side is ``side`` (bicubic, antialiased) and center crop a square."""
    w, h = img.size
    scale = side / min(w, h)
    nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - side) // 2, (nh - side) // 2
    return img.crop((left, top, left + side, top + side))


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: converting straight to RGB would expose arbitrary hidden colours.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")  # 16-bit -> 8-bit
    return img.convert("RGB")  # L, P, CMYK (PIL inverts Adobe CMYK JPEGs), YCbCr, 1

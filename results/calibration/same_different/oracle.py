"""Are the labels of a same_different cache what its images show? A reader that knows the
geometry finds the framed boxes (a ring of ink, an empty gap inside it), compares the two glyphs
and answers "same" when they are equal. Run on the generated class-folder trees:

    python results/calibration/same_different/oracle.py ~/.cache/mvlab/procedural/same_different-*
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from mvlab.data.procedural.same_different import geometry

PER_CLASS = 300


def frames(ink: np.ndarray, box: int, pen: int) -> list[tuple[int, int]]:
    ring = np.ones((box, box), bool)
    ring[pen:-pen, pen:-pen] = False
    side = ink.shape[0]
    return [(y, x) for y in range(side - box + 1) for x in range(side - box + 1)
            if ink[y:y + box, x:x + box][ring].all()
            and not ink[y + pen:y + 2 * pen, x + pen:x + box - pen].any()]


def read(path: Path, box: int, pen: int) -> str:
    ink = np.asarray(Image.open(path).convert("L")) > 0
    found = frames(ink, box, pen)
    if len(found) != 2:
        return f"{len(found)} frames"
    inner = [ink[y + 2 * pen:y + box - 2 * pen, x + 2 * pen:x + box - 2 * pen] for y, x in found]
    return "same" if (inner[0] == inner[1]).all() else "different"


def main(folders: list[str]) -> None:
    for folder in map(Path, folders):
        definition = json.loads((folder / "definition.json").read_text())
        g = geometry(definition["side"], definition["glyph_cells"])
        knobs = {k: definition[k] for k in ("glyph_cells", "changed_cells", "distractors")}
        for split in ("train", "val"):
            for cls in sorted((folder / split).iterdir()):
                truth = cls.name.split("-", 1)[1]
                answers = [read(p, g["box"], g["pen"]) for p in sorted(cls.glob("*.png"))[:PER_CLASS]]
                right = sum(a == truth for a in answers)
                print(f"{folder.name} {knobs} {split} {cls.name}: {right} of {len(answers)} "
                      f"read right")


if __name__ == "__main__":
    main(sys.argv[1:])

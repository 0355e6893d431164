#!/usr/bin/env python3
"""A reproducible hostile-input battery for the mvlab CLI (issue 15, items 7-10).

Every case runs `.venv/bin/mvlab ...` in a subprocess, in a fresh temporary directory (also its
working directory, so `studies/` lands there) with MVLAB_CACHE and HOME pointed into it, a
timeout, and an address-space limit, so a resource bomb fails inside its own process instead of
taking the shared machine down. Cases that need a read-only folder run in a private mount
namespace (`unshare -m`) where that folder is bind-mounted read-only: this runs as root, which
ignores file modes, so a read-only *file system* is the only honest read-only place.

Each case is classified from its exit code and output alone:

    clear         non-zero exit, at most 3 lines on stderr, no traceback
    misleading    clear, but the message says something the case knows is wrong or internal
    noisy         non-zero exit, no traceback, but more than 3 lines on stderr
    warned        exit 0 and a warning line (acceptable only for the silently-wrong class;
                  the tiny base study's own few-token warning does not count)
    accepted      exit 0 and no warning: a finding when the input is bad
    traceback     a Python traceback anywhere in the output
    killed        ended by a signal (e.g. std::bad_alloc -> SIGABRT under the memory limit)
    timeout/hang  still running at the timeout (the whole process group is killed)
    broken-env    mvlab itself failed to import (someone's half-done edit): rerun later

    .venv/bin/python scripts/hostile_inputs.py               # all cases -> results/hostile_inputs/
    .venv/bin/python scripts/hostile_inputs.py --smoke --out /tmp/h   # 3 quick cases
    .venv/bin/python scripts/hostile_inputs.py --only M06,S05 --keep  # rerun some, keep their dirs

`--only` merges its rows into the existing inputs.csv and regenerates README.md from it.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MVLAB = ROOT / ".venv" / "bin" / "mvlab"
DEFAULT_OUT = ROOT / "results" / "hostile_inputs"
sys.path.insert(0, str(ROOT / "tests"))
from study_texts import TINY_GRID  # noqa: E402  (the tests' tiny study is every study's base)

MEMORY_LIMIT = 8 << 30  # address space per case; importing torch needs about 4 GiB of it
OUTCOMES = ["clear", "misleading", "noisy", "warned", "accepted", "traceback", "killed", "timeout/hang",
            "broken-env"]
# what each kind of case may end as without being a finding
ALLOWED = {"error": {"clear"}, "warn": {"clear", "warned"}, "ok": {"accepted", "warned"}}
D = "{d}"  # stands for the case's temporary directory in argv, env and notes


# ------------------------------------------------------------------------------- classification
TRACEBACK = "Traceback (most recent call last)"
BROKEN_ENV = re.compile(
    r"(ImportError|ModuleNotFoundError): (cannot import name .* from '?mvlab|No module named "
    r"'mvlab)|(SyntaxError|IndentationError).*\n?.*mvlab/|File \"[^\"]*/mvlab/[^\"]*\", line \d+"
    r"\n.*\n\s*\^*\s*\n?(SyntaxError|IndentationError)")
WARNING = re.compile(r"\bwarn(ing|ed|s)?\b", re.IGNORECASE)
# warnings that say nothing about the hostile input: the tiny base study trains at 16 px, so
# --check always says its stage 4 sees too few tokens
UNRELATED = re.compile(r"fewer than 4x4")
FRAME = re.compile(r'File "([^"]*?/mvlab/[^"]+)", line (\d+)')


def classify(code: int | None, stdout: str, stderr: str, timed_out: bool = False) -> str:
    """The outcome of one CLI run (see the module docstring)."""
    if timed_out:
        return "timeout/hang"
    text = stdout + "\n" + stderr
    if TRACEBACK in text and BROKEN_ENV.search(text):
        return "broken-env"
    if TRACEBACK in text:
        return "traceback"
    if code is None or code < 0:
        return "killed"
    if code != 0:
        lines = [line for line in stderr.splitlines()
                 if line.strip() and not UNRELATED.search(line)]
        return "clear" if len(lines) <= 3 else "noisy"
    return "warned" if warning_lines(text) else "accepted"


def warning_lines(text: str) -> list[str]:
    """Lines that warn, leaving out third-party Python warnings (a path into site-packages)."""
    return [line for line in text.splitlines()
            if WARNING.search(line) and "site-packages" not in line
            and not UNRELATED.search(line)]


def innermost_frame(text: str) -> str:
    """'mvlab/x.py:12' of the last mvlab frame of a traceback, or ''."""
    frames = FRAME.findall(text)
    if not frames:
        return ""
    path, line = frames[-1]
    return f"{path[path.rfind('/mvlab/') + 1:]}:{line}"


def is_finding(expect: str, outcome: str) -> bool:
    return outcome != "broken-env" and outcome not in ALLOWED[expect]


# ------------------------------------------------------------------------------------ fixtures
def png(path: Path, seed: int = 0, side: int = 12) -> None:
    """A small valid RGB PNG, written with the standard library only."""
    rows = b"".join(b"\x00" + bytes((seed * 37 + x * 11 + y * 5) % 256 for x in range(side * 3))
                    for y in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8,
                                                                        2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def tree(root: Path, classes=("c0", "c1"), n: int = 4,
         corrupt: Callable[[str, str], bool] = lambda split, cls: False,
         splits=("train", "val")) -> None:
    """root/<split>/<class>/<i>.png; corrupt(split, class) -> those files are not images."""
    for split in splits:
        for k, cls in enumerate(classes):
            for i in range(n):
                path = root / split / cls / f"{i}.png"
                if corrupt(split, cls):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(b"this is not a png\n")
                else:
                    png(path, seed=k * 100 + i)


def study(text: str = TINY_GRID, *, append: str = "", replace: tuple[str, str] | None = None,
          raw: bytes | None = None, name: str = "s.yaml") -> Callable[[Path], None]:
    """A setup that writes the tiny study (changed one way) to D/<name>."""
    def setup(d: Path) -> None:
        if raw is not None:
            (d / name).write_bytes(raw)
            return
        body = text if replace is None else text.replace(*replace)
        assert replace is None or body != text, replace
        (d / name).write_text(body + append, encoding="utf-8")
    return setup


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        for one in setups:
            one(d)
    return setup


def afile(d: Path) -> None:
    (d / "afile").write_text("a file, not a folder\n")


def ro_dir(d: Path) -> None:
    (d / "ro").mkdir()


def good(d: Path) -> None:
    tree(d / "good")


def flat_latin1_labels(d: Path) -> None:
    tree(d / "flat", splits=("train",))
    png(d / "flat" / "val" / "a.png")
    png(d / "flat" / "val" / "b.png", seed=3)
    (d / "flat" / "val_labels.txt").write_bytes("a.png c0\nb.png c\xe9\n".encode("latin-1"))


def flat_no_labels(d: Path) -> None:
    tree(d / "flat", splits=("train",))
    png(d / "flat" / "val" / "a.png")


def latin1_classes(d: Path) -> None:
    good(d)
    (d / "latin1.txt").write_bytes("c0\nc\xe9\n".encode("latin-1"))


def symlink_loop(d: Path) -> None:
    tree(d / "loop")
    os.symlink("itself", d / "loop" / "train" / "itself")           # a class folder that loops
    os.symlink(".", d / "loop" / "train" / "c0" / "deeper")          # a folder inside itself
    os.symlink("../c1", d / "loop" / "train" / "c0" / "sideways")


def dangling(d: Path) -> None:
    tree(d / "dang")
    os.symlink("missing.png", d / "dang" / "train" / "c0" / "z.png")


def all_corrupt(d: Path) -> None:
    tree(d / "allbad", corrupt=lambda split, cls: True)


def one_class_corrupt(d: Path) -> None:
    tree(d / "onebad", corrupt=lambda split, cls: split == "train" and cls == "c1")


def one_class(d: Path) -> None:
    tree(d / "one", classes=("c0",), n=6)


def val_extra_class(d: Path) -> None:
    tree(d / "extra")
    tree(d / "extra", classes=("c9",), splits=("val",))


def empty_class(d: Path) -> None:
    tree(d / "emptycls")
    (d / "emptycls" / "train" / "c2").mkdir()


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The billion laughs in YAML: `width ** levels` strings from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def alias_bomb_flow(levels: int = 9, width: int = 9) -> str:
    parts = [f"a0: &a0 [{','.join(['x'] * width)}]"]
    for i in range(1, levels):
        parts.append(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * width)}]")
    return "{" + ", ".join(parts) + "}"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def ten_choices_each(keys: list[str], values: list[str]) -> str:
    return "{" + ", ".join(f"{k}: [{', '.join(values)}]" for k in keys) + "}"


# ---------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    id: str
    category: str          # bomb | validation | mistake | silent | control
    what: str
    argv: list[str]        # after `mvlab`; D is the case's directory
    setup: Callable[[Path], None] | None = None
    expect: str = "error"  # error: must end clear; warn: clear or warned; ok: a valid control
    timeout: float = 120.0
    env: dict[str, str] = field(default_factory=dict)
    readonly: tuple[str, ...] = ()  # folders (relative to D) mounted read-only for the run
    post: Callable[[Path], str | None] | None = None  # may override the outcome after the run
    note: str = ""         # how the setup breaks the input, for the reproduction
    refuse: str = ""       # regex: a clear message matching it is `misleading`
    serve: bool = False    # start a plain HTTP server (404 for every path) on {port} first


S = f"{D}/s.yaml"
CHECK = ["sweep", S, "--check"]
SET = ["sweep", S, "--check", "--set"]
# a real sweep at its smallest: one point, one seed, one epoch, four images a class
RUN = ["sweep", S, "--no-progress", "--n-trials", "1", "--set", "train.epochs=1",
       "train.warmup_epochs=0", "train.threads=1", "data.per_class=4", "study.seeds=[0]", "space={pattern: [last_half]}",
       "bench.warmup=0", "bench.steps=1", "bench.repeats=1", "bench.batch_size=2"]
TRAIN_SETS = ["train.epochs=1", "train.warmup_epochs=0", "train.threads=1", "train.batch_size=4",
              "data.resolution=16", "data.per_class=8"]


def train(*options: str, sets: tuple[str, ...] = ()) -> list[str]:
    """`mvlab train tiny` at its smallest (seconds), with options and more --set values."""
    return ["train", "tiny", "--quiet", *options, "--set", *TRAIN_SETS, *sets]


BENCH = ["bench", "tiny", "--device", "cpu", "--img-size", "16", "--batch-size", "2",
         "--warmup", "0", "--steps", "1", "--repeats", "1", "--threads", "1", "--no-save"]
POP = "study={kind: population, n: 4, seeds: [0], sampler_seed: %s}"
POP_SPACE = "space={d_state: {int: [4, 16]}}"
OPT = "study={kind: optimize, n_trials: 4, seeds: [0], %s}"


def pwned_check(d: Path) -> str | None:
    return "executed" if (d / "pwned").exists() else None


def cases() -> list[Case]:
    grid10 = ten_choices_each(
        ["train.lr", "train.min_lr", "train.warmup_lr", "train.weight_decay",
         "train.label_smoothing", "train.clip_grad", "train.momentum", "data.hflip",
         "train.mixup", "train.cutmix"],
        ["0.001", "0.002", "0.003", "0.004", "0.005", "0.006", "0.007", "0.008", "0.009", "0.01"])
    seeds = "study:\n  kind: grid\n  seeds: [" + ", ".join(map(str, range(200_000))) + "]\n"
    c: list[Case] = [
        # --- controls: valid inputs must pass, or the battery measures nothing
        Case("C01", "control", "show the tiny preset", ["show", "tiny"], expect="ok"),
        Case("C02", "control", "the tiny study, --check", CHECK, study(), expect="ok"),
        Case("C03", "control", "data info on a good folder", ["data", "info", "--root",
                                                               f"{D}/good"], good, expect="ok"),
        # --- 7: resource bombs
        Case("B01", "bomb", "YAML alias bomb (9 levels x 9, ~600 bytes) in the study", CHECK,
             study(append=alias_bomb()), note="s.yaml = tiny study + l0: &l0 [lol x9], "
             "l1: &l1 [*l0 x9] ... l8"),
        Case("B02", "bomb", "recursive alias &d [*d] in the study", CHECK,
             study(append="loop: &d [*d]\n")),
        Case("B03", "bomb", "alias bomb inside a --set value", SET + ["description=" +
                                                                       alias_bomb_flow()],
             study()),
        Case("B04", "bomb", "list nested 20,000 deep in the study",
             CHECK, study(append=f"deep: {nested(20_000)}\n")),
        Case("B06", "bomb", "show T s3.depth=1000000000", ["show", "T", "--set",
                                                            "s3.depth=1000000000"]),
        Case("B07", "bomb", "show T mlp=1e308", ["show", "T", "--set", "mlp=1e308"]),
        Case("B08", "bomb", "show T s3.width=1000000000", ["show", "T", "--set",
                                                            "s3.width=1000000000"]),
        Case("B09", "bomb", "show T d_state=1000000000", ["show", "T", "--set",
                                                           "d_state=1000000000"]),
        Case("B10", "bomb", "show T s4.window=1000000000", ["show", "T", "--set",
                                                             "s4.window=1000000000"]),
        Case("B15", "bomb", "show T depths=64,64,64,64 dim=512 (20 G weights, each size legal)",
             ["show", "T", "--set", "depths=64,64,64,64", "--set", "dim=512"]),
        Case("B16", "bomb", "show T --img-size 1000000000", ["show", "T", "--img-size",
                                                              "1000000000"]),
        Case("B17", "bomb", "show T --num-classes 10**12", ["show", "T", "--num-classes",
                                                             "1000000000000"]),
        Case("B18", "bomb", "show a spec of 4,000 stages", ["show", "stem=8" + " | depth=1 "
                                                             "width=8 pattern=conv" * 4000]),
        Case("B19", "bomb", "show a 100,000-letter explicit pattern",
             ["show", "stem=8 | depth=2 width=8 pattern=" + "M" * 100_000]),
        Case("B20", "bomb", "show tiny mlp=nan", ["show", "tiny", "--set", "mlp=nan"]),
        Case("B21", "bomb", "population n: 10**12, --check", SET + [
            "study={kind: population, n: 1000000000000, seeds: [0]}", POP_SPACE], study()),
        Case("B22", "bomb", "grid of 10**10 points (10 keys x 10 choices), --check",
             SET + ["space=" + grid10], study()),
        Case("B23", "bomb", "200,000 seeds (1.3 MB study), --check", CHECK,
             study(replace=("study:\n  kind: grid\n  seeds: [0, 1]\n", seeds)),
             note="study.seeds = [0 .. 199999], no alias anywhere",
             refuse=r"alias"),
        Case("B24", "bomb", "optimize n_trials 10**12, --check", SET + [
            OPT % "n_trials: 1000000000000", POP_SPACE], study()),
        Case("B25", "bomb", "data.resolution=10**9, --check", SET + ["data.resolution=1000000000"],
             study()),
        Case("B28", "bomb", "bench --batch-size 10**9", BENCH + ["--batch-size", "1000000000"]),
        Case("B29", "bomb", "bench --img-size 100000", BENCH + ["--img-size", "100000"]),
        Case("B30", "bomb", "bench --steps 10**9", BENCH + ["--steps", "1000000000"]),
        Case("B33", "bomb", "train data.resolution=100000", train(sets=("data.resolution=100000",))),
        Case("B35", "bomb", "sweep --workers 100000", RUN[:3] + ["--workers", "100000"] + RUN[3:],
             study()),
        Case("B37", "bomb", "data info --classes first:10**12", [
            "data", "info", "--root", f"{D}/good", "--classes", "first:1000000000000"], good),
        # --- 8: values --check must catch
        Case("V01", "validation", "empty class list", SET + ["data.classes=[]"], study()),
        Case("V02", "validation", "zero std", SET + ["data.std=[0, 0, 0]"], study()),
        Case("V04", "validation", "negative seed", SET + ["study.seeds=[-1]"], study()),
        Case("V05", "validation", "seed 2**32", SET + ["study.seeds=[4294967296]"], study()),
        Case("V07", "validation", "NaN lr", SET + ["train.lr=.nan"], study()),
        Case("V09", "validation", "negative lr", SET + ["train.lr=-0.001"], study()),
        Case("V11", "validation", "negative bench batch", SET + ["bench.batch_size=-8"], study()),
        Case("V15", "validation", "sampler seed -1", SET + [POP % "-1", POP_SPACE], study()),
        Case("V16", "validation", "sampler seed 'abc'", SET + [POP % "abc", POP_SPACE], study()),
        Case("V18", "validation", "population_size 0", SET + [OPT % "population_size: 0",
                                                              POP_SPACE], study()),
        Case("V21", "validation", "heldout_fraction 1.5", SET + ["data.heldout_fraction=1.5"],
             study()),
        Case("V25", "validation", "epochs 0", SET + ["train.epochs=0"], study()),
        Case("V27", "validation", "objective direction typo 'maximise'",
             SET + ["objectives={heldout_top1: maximise}"], study()),
        Case("V28", "validation", "unknown objective metric",
             SET + ["objectives={accuracy: maximize}"], study()),
        Case("V30", "validation", "inverted MACs band", SET + [
            "study={kind: population, n: 4, seeds: [0], band: {macs: [16M, 4M]}}", POP_SPACE],
            study()),
        Case("V32", "validation", "empty choice list", SET + ["space.pattern=[]"], study()),
        Case("V33", "validation", "inverted int range", SET + [
            "study={kind: population, n: 4, seeds: [0]}", "space={d_state: {int: [16, 4]}}"],
            study()),
        Case("V34", "validation", "log range from 0", SET + [
            "study={kind: population, n: 4, seeds: [0]}",
            "space={train.lr: {float: [0, 0.01], log: true}}"], study()),
        Case("V35", "validation", "early_stop margin NaN",
             SET + ["early_stop={after_epoch: 1, margin: .nan}"], study()),
        Case("V37", "validation", "reference names no configuration",
             SET + ["analysis={reference: {pattern: nonexistent}}"], study()),
        Case("V39", "validation", "study name '../../escape' (leaves studies/)",
             SET + ["name=../../escape"], study()),
        Case("V40", "validation", "unknown dataset", SET + ["data.dataset=bogus"], study()),
        Case("V41", "validation", "unknown model", SET + ["model=nonexistent_preset"], study()),
        Case("V42", "validation", "storage ftp://", CHECK + ["--storage", "ftp://host/x"],
             study()),
        Case("V50", "validation", "per_class 0", SET + ["data.per_class=0"], study()),
        Case("V57", "validation", "unknown optimizer", SET + ["train.optimizer=bogus"], study()),
        Case("V59", "validation", "empty seed list", SET + ["study.seeds=[]"], study()),
        Case("V60", "validation", "train.device=cuda:9 on a machine without one",
             SET + ["train.device=cuda:9"], study(), expect="ok",
             note="accepted by design: --check does not judge devices, since a study is often "
                  "checked on a laptop and run on a GPU host (docs/security.md, row 53)"),
        Case("V62", "validation", "storage ftp:// on a real sweep",
             RUN[:3] + ["--storage", "ftp://host/x"] + RUN[3:], study(),
             refuse=r"sqlalchemy|NoSuchModuleError"),
        Case("V63", "validation", "unknown optimizer on a real sweep",
             RUN + ["train.optimizer=bogus"], study()),
        Case("V61", "validation", "sweep --n-trials -5", RUN[:4] + ["-5"] + RUN[5:], study()),
        # --- 9: ordinary mistakes
        Case("M01", "mistake", "non-UTF-8 study file", CHECK, study(
            raw=TINY_GRID.encode() + "description: caf\xe9\n".encode("latin-1")),
            note="s.yaml = tiny study + description in latin-1 (byte 0xe9)"),
        Case("M04", "mistake", "study file missing", ["sweep", f"{D}/missing.yaml", "--check"]),
        Case("M06", "mistake", "non-UTF-8 labels file (flat val)", [
            "data", "info", "--root", f"{D}/flat"], flat_latin1_labels),
        Case("M07", "mistake", "non-UTF-8 class-list file", [
            "data", "info", "--root", f"{D}/good", "--classes", f"{D}/latin1.txt"],
             latin1_classes),
        Case("M08", "mistake", "symlink loops in a data folder, data info", [
            "data", "info", "--root", f"{D}/loop"], symlink_loop, expect="warn"),
        Case("M09", "mistake", "symlink loops in a data folder, data cache", [
            "data", "cache", "--root", f"{D}/loop", "--resolution", "16"], symlink_loop,
             expect="warn"),
        Case("M10", "mistake", "a dangling image symlink, data cache", [
            "data", "cache", "--root", f"{D}/dang", "--resolution", "16"], dangling,
             expect="warn"),
        Case("M11", "mistake", "read-only study folder (workdir)",
             RUN + [f"workdir={D}/ro/study"], both(study(), ro_dir), readonly=("ro",)),
        Case("M12", "mistake", "file-shaped study folder (workdir)",
             RUN + [f"workdir={D}/afile"], both(study(), afile)),
        Case("M13", "mistake", "MVLAB_CACHE is a file", train(), afile,
             env={"MVLAB_CACHE": f"{D}/afile"}),
        Case("M14", "mistake", "MVLAB_CACHE on a read-only file system", train(), ro_dir,
             env={"MVLAB_CACHE": f"{D}/ro"}, readonly=("ro",)),
        Case("M15", "mistake", "data cache --cache-dir read-only", [
            "data", "cache", "--root", f"{D}/good", "--resolution", "16", "--cache-dir",
            f"{D}/ro"], both(good, ro_dir), readonly=("ro",)),
        Case("M16", "mistake", "train --out on a read-only file system",
             train("--out", f"{D}/ro/run"), ro_dir, readonly=("ro",)),
        Case("M17", "mistake", "train --json on a read-only file system",
             train("--json", f"{D}/ro/r.json"), ro_dir, readonly=("ro",)),
        Case("M18", "mistake", "bench --out on a read-only file system",
             BENCH[:-1] + ["--out", f"{D}/ro/bench"], ro_dir, readonly=("ro",)),
        Case("M19", "mistake", "journal storage path is a folder",
             RUN[:3] + ["--storage", f"{D}/adir"] + RUN[3:],
             both(study(), lambda d: (d / "adir").mkdir())),
        Case("M20", "mistake", "sqlite: storage under a file",
             RUN[:3] + ["--storage", f"sqlite:///{D}/afile/x.db"] + RUN[3:],
             both(study(), afile)),
        Case("M22", "mistake", "journal storage under a file",
             RUN[:3] + ["--storage", f"{D}/afile/x.journal"] + RUN[3:], both(study(), afile)),
        Case("M23", "mistake", "report NAME --storage postgresql:// closed port",
             ["report", "t", "--storage", "postgresql://u@127.0.0.1:1/x", "--out", f"{D}/rep"]),
        Case("M24", "mistake", "report FILE --storage postgresql:// closed port",
             ["report", S, "--storage", "postgresql://u@127.0.0.1:1/x"], study()),
        Case("M25", "mistake", "MLflow server unreachable (closed port), --check",
             SET + ["tracking.uri=http://127.0.0.1:1"], study()),
        Case("M26", "mistake", "MLflow server unreachable (closed port), sweep",
             RUN + ["tracking.uri=http://127.0.0.1:1"], study()),
        Case("M27", "mistake", "tracking.uri at a web server that is not MLflow (404 everywhere)",
             RUN + ["tracking.uri=http://127.0.0.1:{port}"], study(), serve=True,
             note="a local `python -m http.server` on an empty folder answers at {port}"),
        Case("M29", "mistake", "MLflow sqlite: URI under a file",
             RUN + [f"tracking.uri=sqlite:///{D}/afile/m.db"], both(study(), afile)),
        Case("M30", "mistake", "report a study that does not exist", ["report", "nope"]),
        Case("M31", "mistake", "report --trials of garbage text",
             ["report", S, "--trials", f"{D}/t.csv", "--out", f"{D}/rep"],
             both(study(), lambda d: (d / "t.csv").write_text("garbage\n\x01,,,\n"))),
        Case("M36", "mistake", "train --device cuda:7 without a GPU", train("--device", "cuda:7")),
        Case("M37", "mistake", "bench --device cuda without a GPU", BENCH[:2] + BENCH[4:] + [
            "--device", "cuda"]),
        Case("M38", "mistake", "bench --scan-backend triton on a CPU",
             BENCH + ["--scan-backend", "triton"]),
        Case("M41", "mistake", "show an empty spec", ["show", ""]),
        Case("M48", "mistake", "flat val/ without a labels file",
             ["data", "info", "--root", f"{D}/flat"], flat_no_labels),
        Case("M49", "mistake", "dashboard on sqlite: storage under a file",
             ["dashboard", S, "--storage", f"sqlite:///{D}/afile/x.db", "--port", "18931"],
             both(study(), afile), timeout=60),
        Case("M50", "mistake", "dashboard --port 99999", ["dashboard", S, "--port", "99999"],
             study(), timeout=60),
        Case("M55", "mistake", "a !!python/object/apply tag in the study (must not run)", CHECK,
             study(append='x: !!python/object/apply:os.system ["touch pwned"]\n'),
             post=pwned_check),
        # --- 10: silently wrong output
        Case("S01", "silent", "show T --img-size -224", ["show", "T", "--img-size", "-224"],
             expect="warn"),
        Case("S02", "silent", "show T --num-classes -5", ["show", "T", "--num-classes", "-5"],
             expect="warn"),
        Case("S03", "silent", "a folder dataset whose images are all corrupt",
             ["data", "cache", "--root", f"{D}/allbad", "--resolution", "16"], all_corrupt,
             expect="warn"),
        Case("S04", "silent", "a class whose training images are all corrupt, data cache",
             ["data", "cache", "--root", f"{D}/onebad", "--resolution", "16"],
             one_class_corrupt, expect="warn"),
        Case("S05", "silent", "a class whose training images are all corrupt, train",
             train("--data", f"{D}/onebad"), one_class_corrupt, expect="warn"),
        Case("S06", "silent", "data info --dataset builtin --root X",
             ["data", "info", "--dataset", "builtin", "--root", f"{D}/good"], good,
             expect="warn"),
        Case("S07", "silent", "data cache --dataset builtin --root X",
             ["data", "cache", "--dataset", "builtin", "--root", f"{D}/good", "--resolution",
              "16"], good, expect="warn"),
        Case("S08", "silent", "train --data builtin data.root=X",
             train("--data", "builtin", sets=(f"data.root={D}/good",)), good, expect="warn"),
        Case("S10", "silent", "show tiny mlp=-1", ["show", "tiny", "--set", "mlp=-1"],
             expect="warn"),
        Case("S12", "silent", "bench --num-classes -5", BENCH + ["--num-classes", "-5"],
             expect="warn"),
        Case("S14", "silent", "bench --batch-size 0", BENCH + ["--batch-size", "0"],
             expect="warn"),
        Case("S15", "silent", "a key given twice in the study (the last wins)", CHECK,
             study(append="train:\n  epochs: 50\n"), expect="warn",
             note="s.yaml = tiny study + a second `train:` mapping"),
        Case("S16", "silent", "a grid choice given twice", SET + [
            "space.pattern=[last_half, last_half]"], study(), expect="warn"),
        Case("S17", "silent", "a seed given twice", SET + ["study.seeds=[0, 0]"], study(),
             expect="warn"),
        Case("S18", "silent", "train on a one-class folder dataset",
             train("--data", f"{D}/one"), one_class, expect="warn"),
        Case("S19", "silent", "train with val_per_class=0 (nothing to score)",
             train(sets=("data.val_per_class=0",)), expect="warn"),
        Case("S20", "silent", "val/ holds a class train/ does not",
             ["data", "info", "--root", f"{D}/extra"], val_extra_class, expect="warn"),
        Case("S21", "silent", "heldout_fraction 0 (no selection split) for a heldout objective",
             RUN + ["data.heldout_fraction=0"], study(), expect="warn"),
        Case("S22", "silent", "bench --threads 0", BENCH + ["--threads", "0"], expect="warn"),
        Case("S23", "silent", "bench --img-size 7 (below one patch)",
             BENCH + ["--img-size", "7"], expect="warn"),
        Case("S24", "silent", "train.batch_size above the whole training set",
             train(sets=("train.batch_size=4096",)), expect="warn"),
    ]
    return c


SMOKE = ("C01", "B06", "M04")


# ---------------------------------------------------------------------------------- the runner
@dataclass
class Result:
    case: Case
    code: int | None
    seconds: float
    outcome: str
    stdout: str
    stderr: str
    attempts: int = 1
    detail: str = ""  # what a sweep recorded: its trials' states and the first failure reason

    @property
    def finding(self) -> bool:
        return is_finding(self.case.expect, self.outcome)


def _limit_memory() -> None:
    os.setsid()
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def command_line(case: Case, d: Path) -> list[str]:
    argv = [str(MVLAB)] + [a.replace(D, str(d)) for a in case.argv]
    if not case.readonly:
        return argv
    mounts = " && ".join(f"mount --bind {shlex.quote(str(d / p))} {shlex.quote(str(d / p))} && "
                         f"mount -o remount,bind,ro {shlex.quote(str(d / p))}"
                         for p in case.readonly)
    return ["unshare", "-m", "sh", "-c", f'{mounts} && exec "$@"', "sh", *argv]


def run_case(case: Case, keep: bool = False) -> Result:
    d = Path(tempfile.mkdtemp(prefix=f"hostile-{case.id}-"))
    server = None
    try:
        if case.setup is not None:
            case.setup(d)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MVLAB_", "MLFLOW_"))}
        env.update({"MVLAB_CACHE": str(d / "cache"), "HOME": str(d), "PYTHONUNBUFFERED": "1",
                    "NO_COLOR": "1", "TERM": "dumb", "PYTHONDONTWRITEBYTECODE": "1"})
        env.update({k: v.replace(D, str(d)) for k, v in case.env.items()})
        server = serve(d) if case.serve else None
        argv = command_line(case, d)
        if server is not None:
            argv = [a.replace("{port}", str(server[1])) for a in argv]
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=d, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=_limit_memory)
        timed_out = False
        try:
            out, err = proc.communicate(timeout=case.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with _suppress():
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        seconds = time.perf_counter() - start
        stdout = out.decode("utf-8", "replace").replace(str(d), "$D")
        stderr = err.decode("utf-8", "replace").replace(str(d), "$D")
        outcome = classify(None if timed_out else proc.returncode, stdout, stderr, timed_out)
        if outcome == "clear" and case.refuse and re.search(case.refuse, stderr):
            outcome = "misleading"
        if case.post is not None and (override := case.post(d)):
            outcome = override
        return Result(case, None if timed_out else proc.returncode, seconds, outcome, stdout,
                      stderr, detail=trials_detail(d))
    finally:
        if server is not None:
            server[0].kill()
            server[0].wait()
        if keep:
            print(f"  kept {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)


def trials_detail(d: Path) -> str:
    """'trials: 1 FAIL (reason)' from the trials.csv files a sweep wrote under D."""
    parts = []
    for path in sorted(d.glob("**/sweep/trials.csv")):
        with path.open(newline="", encoding="utf-8", errors="replace") as f:
            trials = list(csv.DictReader(f))
        states = Counter(t.get("state", "?") for t in trials)
        reasons = [t["reason"] for t in trials if t.get("reason")]
        parts.append("trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
                     + (f" (first reason: {reasons[0][:300]})" if reasons else ""))
    return "; ".join(parts)


def serve(d: Path) -> tuple[subprocess.Popen, int]:
    """A local web server that is not MLflow (python -m http.server on an empty folder)."""
    (d / "www").mkdir(exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                             "127.0.0.1", "--directory", str(d / "www")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, port


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


# ---------------------------------------------------------------------------------- the records
FIELDS = ["id", "category", "what", "command", "expect", "exit_code", "seconds", "outcome",
          "finding", "stderr_lines", "last_lines", "exception", "frame", "frame_dirty", "detail",
          "attempts", "ran_at"]
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b:?.*$", re.M)


def short(arg: str, limit: int = 70) -> str:
    arg = arg.replace(str(MVLAB), "mvlab").replace(D, "$D")
    if len(arg) > limit:
        arg = f"{arg[:limit - 20]}…({len(arg)} chars)"
    return shlex.quote(arg) if arg and not re.fullmatch(r"[\w@%+=:,./$…()*-]+", arg) else (
        arg or "''")


def shown_command(case: Case) -> str:
    text = " ".join(["mvlab"] + [short(a) for a in case.argv])
    env = " ".join(f"{k}={v.replace(D, '$D')}" for k, v in case.env.items())
    ro = f"[read-only: {', '.join('$D/' + p for p in case.readonly)}] " if case.readonly else ""
    return f"{ro}{env + ' ' if env else ''}{text}"


def dirty_files() -> set[str]:
    out = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                         text=True).stdout
    return {line[3:].split(" -> ")[-1] for line in out.splitlines()}


def last_lines(text: str, n: int = 3) -> list[str]:
    return [line.rstrip() for line in text.splitlines()
            if line.strip() and not UNRELATED.search(line)][-n:]


def row(result: Result, dirty: set[str]) -> dict[str, str]:
    text = result.stdout + "\n" + result.stderr
    frame = innermost_frame(text) if result.outcome in ("traceback", "broken-env") else ""
    return {
        "id": result.case.id, "category": result.case.category, "what": result.case.what,
        "command": shown_command(result.case), "expect": result.case.expect,
        "exit_code": "" if result.code is None else str(result.code),
        "seconds": f"{result.seconds:.1f}", "outcome": result.outcome,
        "finding": "yes" if result.finding else "",
        "stderr_lines": str(len([x for x in result.stderr.splitlines() if x.strip()])),
        "last_lines": " ⏎ ".join(last_lines(result.stderr or result.stdout)),
        "exception": (EXCEPTION.findall(text) and EXCEPTION.search(
            text[text.rfind(TRACEBACK):]).group(0)[:300]) if TRACEBACK in text else "",
        "frame": frame, "frame_dirty": "yes" if frame and frame.split(":")[0] in dirty else "",
        "detail": result.detail,
        "attempts": str(result.attempts),
        "ran_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
    }


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_readme(path: Path, rows: list[dict[str, str]], command: str, tails: dict[str, str],
                 commit: str, dirty: set[str], load: str) -> None:
    counts = Counter(r["outcome"] for r in rows)
    by_category = Counter((r["category"], r["outcome"]) for r in rows)
    categories = sorted({r["category"] for r in rows},
                        key=["bomb", "validation", "mistake", "silent", "control"].index)
    findings = [r for r in rows if r["finding"] == "yes"]
    lines = [
        "# Hostile-input battery (issue 15, items 7-10)",
        "",
        "Generated by `scripts/hostile_inputs.py`; do not edit by hand. Every case ran the real CLI",
        "(`.venv/bin/mvlab`) in a fresh temporary folder `$D` (its working directory, `HOME` and",
        "`MVLAB_CACHE=$D/cache`), one at a time, with a timeout and an 8 GiB address-space limit.",
        "Read-only places are read-only bind mounts (`unshare -m`), since root ignores file modes.",
        "",
        f"- command: `{command}`",
        f"- commit: `{commit}` ({len([p for p in dirty if p.startswith('mvlab/')])} files under "
        "mvlab/ modified or moved in the working tree while it ran: others were refactoring)",
        f"- machine load (`uptime`): `{load}`",
        f"- finished: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "Outcomes: `clear` non-zero exit, at most 3 lines on stderr, no traceback; `noisy` the same",
        "with more lines; `warned` exit 0 with a warning line; `accepted` exit 0, nothing said;",
        "`traceback`; `killed` by a signal; `timeout/hang`; `broken-env` mvlab did not import",
        "(a half-done edit by someone else: rerun). A bad input (`expect` error) must end `clear`;",
        "a silently-wrong one (`warn`) may also end `warned`; a control (`ok`) must pass.",
        "",
        "## Counts",
        "",
        "| outcome | " + " | ".join(categories) + " | all |",
        "|---|" + "---|" * (len(categories) + 1),
    ]
    for outcome in OUTCOMES:
        if counts[outcome]:
            lines.append(f"| {outcome} | " + " | ".join(
                str(by_category[(c, outcome)]) for c in categories) + f" | {counts[outcome]} |")
    lines.append("| **all** | " + " | ".join(
        str(sum(by_category[(c, o)] for o in OUTCOMES)) for c in categories)
        + f" | {len(rows)} |")
    lines += ["", f"Findings (an outcome its kind does not allow): **{len(findings)}**.", ""]
    if findings:
        lines += ["## Findings", ""]
        for r in findings:
            lines += [f"### {r['id']} ({r['category']}): {r['what']} -> {r['outcome']}", "",
                      f"`{r['command']}` (exit {r['exit_code'] or '-'}, {r['seconds']} s"
                      + (f", innermost mvlab frame `{r['frame']}`"
                         + (" (a file modified in the working tree)" if r["frame_dirty"] else "")
                         if r["frame"] else "") + ")", "",
                      "Reproduce: `.venv/bin/python scripts/hostile_inputs.py --only "
                      f"{r['id']} --keep --out /tmp/h` (keeps `$D`).", ""]
            if r["exception"]:
                lines += [f"Exception: `{r['exception']}`", ""]
            if r["detail"]:
                lines += [f"Recorded: {r['detail']}", ""]
            tail = tails.get(r["id"]) or r["last_lines"].replace(" ⏎ ", "\n")
            if tail:
                lines += ["```", tail, "```", ""]
    lines += ["## Every case", "",
              "| id | category | input | command | exit | s | outcome | finding | last line |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        last = r["last_lines"].split(" ⏎ ")[-1] if r["last_lines"] else ""
        if len(last) > 160:
            last = last[:157] + "..."
        lines.append("| " + " | ".join(cell(x) for x in (
            r["id"], r["category"], r["what"], f"`{r['command']}`" if len(r["command"]) < 200
            else f"`{r['command'][:190]}…`", r["exit_code"] or "-", r["seconds"], r["outcome"],
            "**yes**" if r["finding"] else "", last)) + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help=f"run only {', '.join(SMOKE)}")
    parser.add_argument("--only", help="comma-separated case ids; merged into the existing CSV")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--keep", action="store_true", help="keep each case's temporary folder")
    parser.add_argument("--retries", type=int, default=4,
                        help="rounds of reruns for broken-env cases (default 4)")
    parser.add_argument("--retry-wait", type=float, default=60.0,
                        help="seconds between those rounds (default 60)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)

    every = cases()
    ids = [c.id for c in every]
    assert len(set(ids)) == len(ids), "duplicate case ids"
    if args.list:
        for c in every:
            print(f"{c.id}  {c.category:10s} {c.expect:5s} {c.what}")
        return 0
    chosen = set(SMOKE) if args.smoke else set(args.only.split(",")) if args.only else set(ids)
    unknown = chosen - set(ids)
    if unknown:
        parser.error(f"unknown case ids: {', '.join(sorted(unknown))}")
    todo = [c for c in every if c.id in chosen]
    if not MVLAB.exists():
        parser.error(f"{MVLAB} is missing: make the venv first (make sweep or pip install -e .)")

    results: dict[str, Result] = {}
    for i, case in enumerate(todo, 1):
        result = run_case(case, args.keep)
        results[case.id] = result
        print(f"[{i}/{len(todo)}] {case.id} {result.outcome:12s} {result.seconds:6.1f}s "
              f"{case.what}", flush=True)
    for round_ in range(args.retries):
        broken = [r.case for r in results.values() if r.outcome == "broken-env"]
        if not broken:
            break
        print(f"{len(broken)} case(s) hit a half-done edit in mvlab; retry round {round_ + 1} in "
              f"{args.retry_wait:.0f} s", flush=True)
        time.sleep(args.retry_wait)
        for case in broken:
            attempts = results[case.id].attempts + 1
            results[case.id] = run_case(case, args.keep)
            results[case.id].attempts = attempts
            print(f"  {case.id} {results[case.id].outcome}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    dirty = dirty_files()
    new_rows = {cid: row(r, dirty) for cid, r in results.items()}
    csv_path = args.out / "inputs.csv"
    old_rows = {r["id"]: r for r in read_csv(csv_path)} if args.only else {}
    merged = {**old_rows, **new_rows}
    rows = [merged[i] for i in ids if i in merged]
    write_csv(csv_path, rows)
    tails = {cid: "\n".join(["stdout:", *last_lines(r.stdout, 4), "stderr:",
                             *last_lines(r.stderr, 6)])
             for cid, r in results.items() if r.finding}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    command = "python scripts/hostile_inputs.py" + (" " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)) if (
        sys.argv[1:] if argv is None else argv) else "")
    if args.only:
        previous = (args.out / "README.md")
        if previous.exists():
            match = re.search(r"- command: `([^`]*)`", previous.read_text(encoding="utf-8"))
            if match and "--only" not in match.group(1):
                command = f"{match.group(1)}, then {command}"
            elif match:
                command = f"{match.group(1)}, then {command.split('scripts/hostile_inputs.py ')[-1]}"
    write_readme(args.out / "README.md", rows, command, tails, commit, dirty, load)
    counts = Counter(r["outcome"] for r in rows)
    print(", ".join(f"{o} {counts[o]}" for o in OUTCOMES if counts[o]),
          f"| findings {sum(1 for r in rows if r['finding'] == 'yes')} | {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shipped studies' sweeps on a lent GPU, inside a fixed time budget, then their throughput axis
measured on the quiet GPU; everything packed into one archive under --out.

    python3 scripts/gpu_studies.py --out $OUT --budget-s 480 --commit <sha> \
        --phase experiments/hybrid_patterns.yaml:9:42 experiments/calibration_width.yaml:3 \
        --phase experiments/mixer_ablation.yaml:12
    python3 scripts/gpu_studies.py --out /tmp/smoke --smoke --phase experiments/quickstart.yaml:2

A --phase is a list of STUDY:WORKERS[:TRIALS] run side by side (``mvlab sweep --workers``; with
TRIALS, ``--n-trials``: at most that many trials in this phase, and no sequential stage, which
waits for a later phase of the same study); phases run one after another, and a phase with less
than MIN_PHASE_S left is skipped. Every sweep is the real one (Optuna journal, MLflow, sequential
seeds), with the study's own setting except the device: ``train.device=cuda
train.precision=fp32`` (the CPU calibration trained in fp32) and ``bench.device=cuda``, plus any
``--set``. DRAIN_S before the deadline every sweep gets SIGUSR1 (drain: the running trials
finish, no new one starts); sweeps still running at the deadline get SIGINT together (their
running trials are recorded as interrupted and a rerun resumes them), so one lease always brings
back what finished.

The throughput each trial measures before training shares the GPU with the other workers; the
report's throughput axis comes from ``mvlab bench study`` afterwards, with nothing else running.

Writes under --out: log.txt, environment.json, studies.tgz (each study's journal, MLflow
database and throughput CSV, the sweeps' logs): 3 files plus one log a study, since the device
tool brings back at most 8. Needs optuna and mlflow on the device (carried as wheels:
results/gpu/studies/README.md says how).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GPU_SETTINGS = ["train.device=cuda", "train.precision=fp32", "train.threads=1",
                "bench.device=cuda"]
# Seconds a trial: the device check's setting, and the smoke's.
TINY = ["train.epochs=1", "train.batch_size=8", "data.per_class=16", "data.val_per_class=8",
        "data.heldout_fraction=0.25", "study.seeds=[0]", "bench.steps=1", "bench.repeats=1",
        "bench.warmup=1"]
# The smoke setting: a minute on a CPU, the same code paths (journal, MLflow, workers, bench study).
SMOKE_SETTINGS = ["train.device=cpu", "train.threads=1", "bench.device=cpu", *TINY]
GPU_BENCH = ["bench.device=cuda", "bench.batch_size=256", "bench.precision=bf16",
             "bench.warmup=10"]
SMOKE_BENCH = ["bench.device=cpu", "bench.batch_size=2", "bench.threads=1", "bench.warmup=1"]
RESERVE_S = 75     # kept back for the throughput pass and the archive
GRACE_S = 40       # after SIGINT: time for a sweep to record its interrupted trials
MIN_PHASE_S = 120  # a phase needs time for at least one trial (74-98 s on the H200)
DRAIN_S = 100      # a trial's length: started earlier it can finish, later it would be lost
SMOKE_MIN_PHASE_S, SMOKE_DRAIN_S = 10, 10
CHECK_TIMEOUT_S = 240


@dataclass(frozen=True)
class Job:
    study: Path
    workers: int
    trials: int | None

    @classmethod
    def parse(cls, text: str) -> Job:
        parts = text.split(":")
        counts = parts[1:]
        if (not 1 <= len(parts) <= 3 or not parts[0].endswith((".yaml", ".yml"))
                or not all(c.isdigit() and int(c) > 0 for c in counts)):
            raise SystemExit(f"--phase item {text!r}: expected STUDY.yaml[:WORKERS[:TRIALS]] "
                             f"with positive whole numbers")
        workers = int(counts[0]) if counts else 1
        trials = int(counts[1]) if len(counts) > 1 else None
        return cls(Path(parts[0]), workers, trials)


class Log:
    def __init__(self, out: Path):
        self.path, self.start = out / "log.txt", time.time()

    def __call__(self, msg: str) -> None:
        line = f"[{time.time() - self.start:6.0f} s] {msg}"
        print(line, flush=True)
        with self.path.open("a") as fh:
            fh.write(line + "\n")


def environment(commit: str | None) -> dict:
    import torch

    env = {"commit": commit, "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
           "device": "cuda" if torch.cuda.is_available() else "cpu",
           "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(0)
        env["device_memory_mib"] = torch.cuda.get_device_properties(0).total_memory // 2**20
    for name in ("triton", "timm", "optuna", "mlflow"):
        try:
            env[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001 - recorded, the sweeps then say what is missing
            env[name] = f"missing ({exc})"
    return env


def mvlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "mvlab", *args]


def device_check(settings: list[str], log: Log) -> bool:
    """One tiny trial of the real sweep on the device first: a bug in the device path then costs
    seconds of the lease, not the whole budget spent on trials that all fail."""
    started = time.time()
    # Outside --out: the device tool brings back only a few files from there.
    with tempfile.TemporaryDirectory(prefix="mvlab-device-check-") as scratch:
        cmd = mvlab("sweep", "experiments/quickstart.yaml", "--n-trials", "1", "--no-progress",
                    "--set", *settings, *TINY, f"workdir={scratch}/{{name}}")
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                                  timeout=CHECK_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            log(f"device check FAILED: no answer in {CHECK_TIMEOUT_S} s\n{exc.stdout or ''}")
            return False
    ok = proc.returncode == 0 and "complete 1" in proc.stdout
    log(f"device check {'passed' if ok else 'FAILED'} in {time.time() - started:.0f} s "
        f"(exit {proc.returncode})" + ("" if ok else f"\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"))
    return ok


def data_settings(config: Any) -> list[Any]:
    """Every data setting the study's trials can train on: its own, or one per combination of
    the categorical ``data.*`` knobs of its space (e.g. calibration_budget's contour lengths)."""
    import itertools

    from mvlab.study.space import resolve_point  # how a trial's point sets its data config

    axes = [d for d in config.space if d.target == "data" and d.kind == "categorical"]
    if not axes:
        return [config.data]
    return [resolve_point(config, dict(zip((d.key for d in axes), values, strict=True))).data
            for values in itertools.product(*(d.choices for d in axes))]


def prepare_data(study: Path, config: Any, log: Log) -> None:
    """The study's generated data built once here, so the workers open one cache instead of each
    generating the same images at the same moment."""
    from mvlab.data.bundle import build_data

    started = time.time()
    settings = data_settings(config)
    for data in settings:
        build_data(data, config.train.batch_size)
    log(f"{study.stem}: data ready in {time.time() - started:.0f} s ({len(settings)} setting(s))")


def study_settings(studies: list[Path], settings: list[str],
                   set_for: list[list[str]]) -> dict[Path, list[str]]:
    """Each study's overrides: the run's, then its own ``--set-for`` ones."""
    per_study = {study: list(settings) for study in studies}
    for study, *overrides in set_for:
        if Path(study) not in per_study:
            raise SystemExit(f"--set-for {study}: not a study of any --phase "
                             f"({', '.join(map(str, studies))}); name it as the phase does")
        per_study[Path(study)] += overrides
    return per_study


STARTED: list[subprocess.Popen] = []  # every sweep, so that a failing script leaves none behind


def run_phase(jobs: list[Job], settings: dict[Path, list[str]], deadline: float, drain_s: float,
              out: Path, log: Log) -> None:
    """The phase's sweeps side by side, each logged as it ends; ``drain_s`` before the deadline
    they are drained, at the deadline the ones still running are stopped together."""
    running = {}
    for job in jobs:
        cmd = mvlab("sweep", str(job.study), "--workers", str(job.workers), "--no-progress",
                    "--set", *settings[job.study])
        if job.trials is not None:
            cmd[4:4] = ["--n-trials", str(job.trials)]
        sweep_log = (out / f"sweep_{job.study.stem}.log").open("a")
        log(f"start: {' '.join(cmd[2:])}")
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=sweep_log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: SIGINT reaches workers
        STARTED.append(proc)
        running[proc] = (job, sweep_log)
    drained = False
    while running and time.time() < deadline:
        if not drained and time.time() > deadline - drain_s:
            for proc in running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGUSR1)
            log(f"drain: {', '.join(j.study.stem for j, _ in running.values())} finish their "
                f"running trials and start no more")
            drained = True
        for proc in [p for p in running if p.poll() is not None]:
            job, sweep_log = running.pop(proc)
            sweep_log.close()
            log(f"{job.study.stem}: sweep exit {proc.returncode}")
        time.sleep(1.0)
    for proc, code in stop(list(running)).items():
        job, sweep_log = running[proc]
        sweep_log.close()
        log(f"{job.study.stem}: stopped at the deadline (exit {code})")


def stop(procs: list[subprocess.Popen]) -> dict[subprocess.Popen, int]:
    """SIGINT to every sweep's process group at once (workers record interrupted trials), then
    SIGTERM and SIGKILL to whatever is left; the exit codes."""
    left = list(procs)
    for sig, wait in ((signal.SIGINT, GRACE_S), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        for proc in left:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        until = time.time() + wait
        while left and time.time() < until:
            left = [p for p in left if p.poll() is None]
            time.sleep(0.2)
        if not left:
            break
    return {proc: proc.wait() for proc in procs}


def bench_study(study: Path, config: Any, settings: list[str], bench: list[str], log: Log,
                timeout_s: float) -> None:
    target = Path(config.workdir) / "throughput.csv"
    cmd = mvlab("bench", "study", str(study), "--rounds", "10", "--steps", "5",
                "--out", str(target), "--set", *settings, *bench)
    started = time.time()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              timeout=max(5.0, timeout_s))
        log(f"{study.stem}: bench study exit {proc.returncode} in "
            f"{time.time() - started:.0f} s\n{proc.stdout[-2500:]}{proc.stderr[-1500:]}")
    except subprocess.TimeoutExpired:
        log(f"{study.stem}: bench study did not finish in {timeout_s:.0f} s")


def pack(configs: dict[Path, Any], out: Path, log: Log) -> None:
    with tarfile.open(out / "studies.tgz", "w:gz") as tar:
        for config in configs.values():
            workdir = REPO / config.workdir
            for name in ("optuna.journal", "mlflow.db", "throughput.csv"):
                if (workdir / name).exists():
                    tar.add(workdir / name, arcname=f"{workdir.name}/{name}")
        for sweep_log in out.glob("sweep_*.log"):
            tar.add(sweep_log, arcname=f"logs/{sweep_log.name}")
    log(f"packed {out / 'studies.tgz'} ({(out / 'studies.tgz').stat().st_size // 1024} KiB)")


def main() -> int:
    # A shell starts a background job (`cmd &`, setsid) with SIGINT ignored, and the sweeps would
    # inherit that: the deadline's SIGINT would not stop them, and their running trials would be
    # killed unrecorded after the grace. A handler of our own resets to the default across exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--phase", nargs="+", action="append", required=True,
                        metavar="STUDY:WORKERS[:TRIALS]")
    parser.add_argument("--budget-s", type=float, default=480,
                        help="everything, the throughput pass and the archive included")
    parser.add_argument("--commit", help="the commit the working tree was copied from")
    parser.add_argument("--workdir", type=Path,
                        help="put the studies' folders here (default: each study's own, studies/NAME)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="more overrides for every study, e.g. 'study.seeds=[0,1,2,3,4,5]'")
    parser.add_argument("--set-for", nargs="+", action="append", default=[],
                        metavar=("STUDY", "KEY=VALUE"),
                        help="overrides for one study of the phases, after --set, e.g. "
                             "experiments/calibration.yaml train.lr=1e-3 name=calibration_lr1e3")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, tiny data, a minute or two: tests the script, measures nothing")
    args = parser.parse_args()
    phases = [[Job.parse(item) for item in phase] for phase in args.phase]
    settings = SMOKE_SETTINGS if args.smoke else GPU_SETTINGS
    settings = [*settings, *args.set]
    if args.workdir:
        settings = [*settings, f"workdir={args.workdir.resolve()}/{{name}}"]
    studies = list(dict.fromkeys(job.study for phase in phases for job in phase))
    per_study = study_settings(studies, settings, args.set_for)
    bench = SMOKE_BENCH if args.smoke else GPU_BENCH
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out)
    deadline = log.start + args.budget_s - RESERVE_S
    min_phase = SMOKE_MIN_PHASE_S if args.smoke else MIN_PHASE_S
    drain_s = SMOKE_DRAIN_S if args.smoke else DRAIN_S

    env = environment(args.commit)
    (args.out / "environment.json").write_text(json.dumps(env, indent=2))
    log(f"environment: {json.dumps(env)}")
    if not args.smoke and env["device"] != "cuda":
        log("no CUDA device: nothing run (use --smoke on a CPU)")
        return 2

    if not device_check(settings, log):
        return 3
    from mvlab.study import load_study

    # Each study once, in the order the phases first name it, read with its own settings.
    configs = {study: load_study(study, per_study[study]) for study in studies}
    try:
        for study, config in configs.items():
            prepare_data(study, config, log)
        for number, phase in enumerate(phases, 1):
            if time.time() > deadline - min_phase:
                log(f"phase {number} skipped: less than {min_phase} s left")
                continue
            run_phase(phase, per_study, deadline, drain_s, args.out, log)
    finally:
        stop([p for p in STARTED if p.poll() is None])  # none left training after an error
    for i, (study, config) in enumerate(configs.items()):
        left = log.start + args.budget_s - 15 - time.time()
        bench_study(study, config, per_study[study], bench, log, left / (len(configs) - i))
    pack(configs, args.out, log)
    log(f"done in {time.time() - log.start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

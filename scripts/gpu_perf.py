"""Every GPU check in one run: scan equivalence and bandwidth, model throughput against peers,
a profile of MambaVision-T, and the plots. Writes at most 8 files under --out.

    python scripts/gpu_perf.py --out results/gpu [--budget-s 420] [--quick] [--headline]
    python scripts/gpu_perf.py --out /tmp/smoke --smoke     # CPU, a minute: tests the script

Order: the profile of MambaVision-T (scan and copy shares of the step), the scan checks, then
model throughput with the headline pair (T and ConvNeXt-T, eager and compiled) first.

Sections run in order of importance and each is guarded: a failure is written to the log and
the next section still runs; when the time budget is spent the remaining sections are skipped
(and say so), so one lease of a GPU always brings back what was measured.
Needs torch, triton and timm only (no optuna/mlflow).
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The paper's A100 numbers (batch 128, 224 px, fp16, channels-last), img/s.
PAPER_IMG_S = {"mambavision_t": 6298, "mambavision_s": 4700, "mambavision_b": 3670,
               "convnext_tiny": 3196, "swin_tiny_patch4_window7_224": 2758}
MVLAB = ["mambavision_t", "mambavision_s", "mambavision_b"]
PEERS = ["convnext_tiny", "convnext_small", "swin_tiny_patch4_window7_224", "mambaout_tiny"]
PAIR = ("mambavision_t", "convnext_tiny")  # the paper's headline ratio
# What a run measures with; ``--smoke`` swaps in a CPU setting that takes a minute, so the script
# itself is tested in CI (tests/test_gpu_scripts.py) and a GPU lease is not spent on a typo.
SETTING = dict(device="cuda", batch=128, img=224, warmup=10, steps=20, repeats=3,
               compile="default", precision="fp16")
SMOKE = dict(device="cpu", batch=2, img=64, warmup=1, steps=2, repeats=1, compile=None,
             precision="bf16")
SMOKE_MODELS = dict(MVLAB=["mambavision_tiny"], PEERS=["convnext_atto"],
                    PAIR=("mambavision_tiny", "convnext_atto"))


def log(msg: str, out: Path) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    with open(out / "log.txt", "a") as fh:
        fh.write(line + "\n")


def section(name, fn, out: Path, deadline: float) -> None:
    if time.time() > deadline:
        log(f"SKIPPED {name}: time budget spent", out)
        return
    log(f"BEGIN {name}", out)
    t0 = time.time()
    try:
        fn()
        log(f"END {name} ({time.time() - t0:.0f} s)", out)
    except Exception:  # noqa: BLE001 - a broken section must not cost the others
        log(f"FAILED {name} after {time.time() - t0:.0f} s:\n{traceback.format_exc()}", out)


def environment() -> dict:
    import torch
    env = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    for mod in ("triton", "timm"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            env[mod] = "n/a"
    try:
        env["driver"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001
        env["driver"] = "n/a"
    return env


def scan_checks(out: Path, budget_s: int) -> None:
    script = REPO / "scripts" / "gpu_check.py"
    if not script.exists():
        raise FileNotFoundError(script)
    subprocess.run([sys.executable, str(script), "--out", str(out / "scan")], check=False,
                   timeout=budget_s)


def model_throughput(out: Path, deadline: float, quick: bool, headline: bool) -> list[dict]:
    from mvlab.training.bench import measure_throughput

    rows: list[dict] = []
    path = out / "models.csv"
    # The headline pair first (eager inference and training, then compiled inference), so a
    # short lease always answers the paper's ratio.
    precision = SETTING["precision"]
    plan = [dict(model_or_name=name, mode=mode, precision=precision, compile=False)
            for mode in ("infer", "train") for name in PAIR]
    if SETTING["compile"]:  # last of the pair: a minute or more each
        plan += [dict(model_or_name=name, mode="infer", precision=precision,
                      compile=SETTING["compile"]) for name in PAIR]
    if not headline:
        for precision in ("fp16", "bf16"):
            for mode in ("infer", "train"):
                for name in MVLAB + PEERS:
                    job = dict(model_or_name=name, mode=mode, precision=precision, compile=False)
                    if job not in plan:
                        plan.append(job)
    for job in plan:
        if time.time() > deadline:
            log(f"skipped (budget): {job}", out)
            continue
        try:
            row = measure_throughput(batch_size=SETTING["batch"], img_size=SETTING["img"],
                                     device=SETTING["device"], channels_last=True,
                                     warmup=SETTING["warmup"],
                                     steps=SETTING["steps"] * (1 if quick else 2),
                                     repeats=SETTING["repeats"], **job)
        except Exception as exc:  # noqa: BLE001
            log(f"bench failed {job}: {exc!r}", out)
            continue
        rows.append(row)
        log(f"{row['model']:32s} {row['mode']:5s} {row['precision']} compile={row['compile']} "
            f"bs={row['batch_size']} {row['img_s_median']} img/s scan={row['scan_backend']}", out)
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows


def profile_t(out: Path) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from mvlab.models import build_model  # importing mvlab.models registers the timm names

    device = SETTING["device"]
    model = build_model(PAIR[0]).to(device).eval().to(memory_format=torch.channels_last)
    x = torch.randn(SETTING["batch"], 3, SETTING["img"], SETTING["img"], device=device)
    x = x.to(memory_format=torch.channels_last)
    amp = torch.float16 if device == "cuda" else torch.bfloat16

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad(), torch.autocast(device, dtype=amp):
        for _ in range(5):
            model(x)
        sync()
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                model(x)
            sync()
    events = prof.key_averages()
    table = events.table(sort_by="self_cuda_time_total", row_limit=30)

    def cuda_us(e) -> float:
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)

    # Count device kernels only: an aten op and the kernel it launches both carry the same
    # self-CUDA time, so summing every row would count each kernel twice.
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(cuda_us(e) for e in kernels)
    scan = sum(cuda_us(e) for e in kernels if "scan" in e.key.lower())
    # aten::copy_ rows carry the time of the copy kernels they launched (layout changes and
    # dtype casts); benchmarks/layout_copies.py counts the layout part on any machine.
    copies = sum(cuda_us(e) for e in events if e.key == "aten::copy_")
    summary = {"total_cuda_ms_per_step": total / 5 / 1e3, "scan_cuda_ms_per_step": scan / 5 / 1e3,
               "scan_share": scan / total if total else None,
               "copy_cuda_ms_per_step": copies / 5 / 1e3,
               "copy_share": copies / total if total else None}
    (out / "profile_t.txt").write_text(json.dumps(summary, indent=2) + "\n\n" + table + "\n")


def plots(out: Path, rows: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r["mode"] == "infer"
          and r["precision"] == SETTING["precision"] and r["compile"] == "none"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in ok:
        color = "tab:green" if r["model"].startswith("mambavision") else "tab:gray"
        ax1.scatter(r["params"] / 1e6, r["img_s_median"], color=color)
        ax1.annotate(r["model"].replace("_patch4_window7_224", ""),
                     (r["params"] / 1e6, r["img_s_median"]), fontsize=8)
    ax1.set(xlabel="params (M)",
            ylabel=f"img/s ({SETTING['precision']}, bs {SETTING['batch']}, {SETTING['img']} px, NHWC)",
            title=f"inference throughput on {rows[0]['device_name'] if rows else '?'}")
    by = {r["model"]: r["img_s_median"] for r in ok}
    names = [m for m in PAPER_IMG_S if m in by and "convnext_tiny" in by]
    measured = [by[m] / by["convnext_tiny"] for m in names]
    paper = [PAPER_IMG_S[m] / PAPER_IMG_S["convnext_tiny"] for m in names]
    xs = range(len(names))
    ax2.bar([x - 0.2 for x in xs], measured, 0.4, label="mvlab, this GPU")
    ax2.bar([x + 0.2 for x in xs], paper, 0.4, label="paper, A100")
    ax2.set_xticks(list(xs), [n.replace("_patch4_window7_224", "") for n in names], rotation=20)
    ax2.set(ylabel="throughput / ConvNeXt-T", title="ratio to ConvNeXt-T")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=int, default=420,
                        help="stop starting new work after this many seconds")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--headline", action="store_true",
                        help="models: only MambaVision-T and ConvNeXt-T (eager inference and "
                        "training, then compiled inference)")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, tiny models, a minute: tests the script, measures nothing")
    args = parser.parse_args()
    if args.smoke:
        SETTING.update(SMOKE)
        globals().update(SMOKE_MODELS)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    deadline = start + args.budget_s
    env = environment()
    (out / "environment.json").write_text(json.dumps(env, indent=2))
    log(f"environment: {env}", out)
    rows: list[dict] = []

    section("profile MambaVision-T", lambda: profile_t(out), out, deadline)
    section("scan checks and scan benchmark", lambda: scan_checks(out, max(60, args.budget_s * 2 // 5)),
            out, deadline)

    def _models():
        rows.extend(model_throughput(out, deadline - 30, args.quick, args.headline))
    section("model throughput", _models, out, deadline)
    section("plots", lambda: plots(out, rows), out, deadline + 60)
    log(f"done in {time.time() - start:.0f} s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

# Run verbatim on the same warm H200 right after scripts/gpu_perf.py (whose time budget skipped
# these): `python3 - < results/gpu/followup_command.py` wrote models_followup.csv.
import csv, sys, time
sys.path.insert(0, '.')
from mvlab.training.bench import measure_throughput
rows = []
jobs = [("mambavision_t", "infer", "fp16", "default"), ("convnext_tiny", "infer", "fp16", "default"),
        ("convnext_tiny", "train", "bf16", False), ("swin_tiny_patch4_window7_224", "train", "bf16", False),
        ("mambaout_tiny", "train", "bf16", False), ("mambavision_b", "train", "bf16", False), ("convnext_small", "train", "bf16", False)]
t0 = time.time()
for m, mode, p, c in jobs:
    if time.time() - t0 > 150: print("skipped", m, mode, p, c); continue
    try:
        r = measure_throughput(m, mode=mode, precision=p, compile=c, batch_size=128, img_size=224, device="cuda", channels_last=True, warmup=10, steps=20, repeats=3)
    except Exception as e:
        print("FAILED", m, mode, p, c, repr(e)[:300]); continue
    rows.append(r); print(m, mode, p, c, r["img_s_median"], f"{time.time()-t0:.0f}s", flush=True)
    with open(f"{__import__('os').environ['OUT']}/models_followup.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)

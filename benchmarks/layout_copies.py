"""Layout copies in a MambaVision forward (and backward): how many values the model copies
(aten::copy_: .contiguous(), .to(), reshapes of non-viewable tensors, copies inside other ops)
outside the selective scan, by the op that made each copy.

    python benchmarks/layout_copies.py                     # T, batch 8, 224 px, forward
    python benchmarks/layout_copies.py --backward --json out.json

Counted on the CPU with the profiler, so it runs anywhere. Left out: copies inside the scan (the
CPU backends copy to their own layouts, the Triton kernels read strided views in place) and the
bias fill inside aten::addmm (the CPU BLAS path initialises every Linear output with its bias; a
GPU fuses the bias into the GEMM). It is a device-independent proxy for the ``aten::copy_`` time
of a GPU profile (results/gpu/README.md): every value copied is read once and written once.
CPU convolutions reorder inside oneDNN where the profiler cannot see, and the profiler does not
record the sizes of aten::cat's inputs (one concatenation per mixer, counted in calls only); a
GPU profile remains the judge.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

import torch

SCAN_RANGE = "mvlab::selective_scan"
NOT_LAYOUT = ("aten::addmm",)  # the CPU's bias fill of a Linear output


def _ancestors(event) -> list[str]:
    names, parent = [], event.cpu_parent
    while parent is not None:
        names.append(parent.name)
        parent = parent.cpu_parent
    return names


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def count_copies(model_name: str, batch: int, size: int, backward: bool) -> dict:
    from mvlab.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    model(x)  # warm-up: kernels built, caches filled
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        out = model(x)
        if backward:
            out.float().pow(2).mean().backward()
    by_op, calls = Counter(), Counter()
    cats = 0
    for event in prof.events():
        ancestors = _ancestors(event)
        if SCAN_RANGE in ancestors:
            continue
        if event.name == "aten::cat":
            cats += 1
        if event.name != "aten::copy_" or (ancestors and ancestors[0] in NOT_LAYOUT):
            continue
        # the op the model called (outermost aten op), e.g. aten::linear, aten::contiguous
        outer = next((a for a in reversed(ancestors) if a.startswith("aten::")), "aten::copy_")
        by_op[outer] += _numel(event.input_shapes[0]) if event.input_shapes else 0
        calls[outer] += 1
    return {"model": model_name, "batch": batch, "size": size, "backward": backward,
            "copied_values_total": sum(by_op.values()), "copied_values_by_op": dict(by_op),
            "copy_calls_by_op": dict(calls), "cat_calls": cats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="T")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--backward", action="store_true", help="also count the backward pass")
    parser.add_argument("--json", help="write the counts here too")
    args = parser.parse_args(argv)
    report = count_copies(args.model, args.batch, args.size, args.backward)
    pass_name = "forward+backward" if args.backward else "forward"
    print(f"{args.model} batch {args.batch} {args.size}px {pass_name}: "
          f"{report['copied_values_total'] / 1e6:.2f} M values copied outside the scan; "
          f"{report['cat_calls']} concatenations")
    for op, n in sorted(report["copied_values_by_op"].items(), key=lambda kv: -kv[1]):
        print(f"  {n / 1e6:8.2f} M  {report['copy_calls_by_op'][op]:4d} calls  {op}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

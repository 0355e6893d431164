"""What the decoded cache's checksum check costs: the sha256 of each entry's arrays, which
``mvlab.data.cache.open_cache`` computes before reusing an entry (docs/security.md).

    python benchmarks/cache_checksum_cost.py                 # built-in set, 64 px
    python benchmarks/cache_checksum_cost.py --resolution 128 --repeats 9

Builds the built-in set's cache in a temporary folder (decoding it once), then times the
checksum of each entry ``--repeats`` times (median, min, max) and one whole reuse through
``build_data``; prints the machine's load average, since the numbers move with it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from mvlab.data import DataConfig, build_data
    from mvlab.data.cache import ARRAYS, checksums

    folder = Path(tempfile.mkdtemp(prefix="mvlab-checksum-cost-"))
    try:
        cfg = DataConfig(dataset="builtin", resolution=args.resolution, cache_dir=str(folder))
        start = time.perf_counter()
        build_data(cfg, batch_size=128, progress=False)
        print(f"first build_data (decodes): {time.perf_counter() - start:.1f} s")
        for entry in sorted((folder / "decoded").iterdir()):
            if entry.name.startswith("."):
                continue
            size = sum((entry / name).stat().st_size for name in ARRAYS)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                checksums(entry)
                times.append(time.perf_counter() - start)
            print(f"{entry.name}: {size / 1e6:.1f} MB, checksum median "
                  f"{statistics.median(times) * 1e3:.0f} ms (min {min(times) * 1e3:.0f}, "
                  f"max {max(times) * 1e3:.0f})")
        start = time.perf_counter()
        build_data(cfg, batch_size=128, progress=False)
        print(f"second build_data (reuse, checksums checked): {time.perf_counter() - start:.2f} s")
        print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
              f"on {os.cpu_count()} cores")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

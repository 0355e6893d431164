#!/usr/bin/env bash
# The one command for a lease of the device machine (see /work/.library/device/README.md):
# every GPU check of scripts/gpu_perf.py within BUDGET_S seconds, packed into one archive under
# $OUT (the device tool brings back a few files only). On this machine afterwards:
#   tar xzf <files_at>/gpu.tgz -C /tmp && ls /tmp/g     # then copy what is new into results/gpu/
# Needs torch, triton and timm on the device (its image has them); optuna/mlflow are not used.
set -uo pipefail
BUDGET_S=${BUDGET_S:-360}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
rm -rf /tmp/g  # a fresh folder: the archive holds this run only
timeout $((BUDGET_S + 80)) "${PYTHON:-python3}" scripts/gpu_perf.py --out /tmp/g --budget-s "$BUDGET_S" \
  --quick --headline "$@"
rc=$?
tar czf "$OUT/gpu.tgz" -C /tmp g
echo "gpu_perf exit $rc; archive $OUT/gpu.tgz ($(du -h "$OUT/gpu.tgz" | cut -f1))"
exit $rc

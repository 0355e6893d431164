#!/usr/bin/env bash
# Layout copies outside the scan, before and after the token-major mixer (commit 69ad091), on the
# CPU with the profiler. "before" = mvlab/models/blocks.py of commit 4d97224 (channel-major mixer)
# with everything else as in this tree, so only the mixer differs. Run from the repository root.
set -euo pipefail
out=results/layout
py=${PYTHON:-.venv/bin/python}
trap 'git checkout -q HEAD -- mvlab/models/blocks.py' EXIT
for when in before after; do
  if [ "$when" = before ]; then git show 4d97224:mvlab/models/blocks.py > mvlab/models/blocks.py; fi
  if [ "$when" = after ]; then git checkout -q HEAD -- mvlab/models/blocks.py; fi
  for pass in forward backward; do
    flag=$([ "$pass" = backward ] && echo --backward || true)
    "$py" benchmarks/layout_copies.py --model T --batch 8 --size 224 $flag \
      --json "$out/${when}_${pass}.json" 2>/dev/null | tee "$out/${when}_${pass}.txt"
  done
done

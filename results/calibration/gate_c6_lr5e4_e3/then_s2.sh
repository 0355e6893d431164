#!/bin/bash
# After seeds 0-1 finish: the same study resumed with seed 2 added (same name, same journal).
cd /work/calib_logs/gate_c6_lr5e4_e3
while pgrep -f "name=gate_c6_lr5e4_e3" > /dev/null; do sleep 20; done
SEEDS='[0, 1, 2]' ./run.sh > run_s2.out 2>&1

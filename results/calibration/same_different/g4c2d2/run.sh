#!/bin/bash
# same_different (glyph_cells 4, changed_cells 2, distractors 2), the gate's four patterns, 950 steps,
# seed 0, from a worktree at a fixed commit (results/calibration/same_different/RUN.md).
WT=/work/wt/sd
LOG=/work/calib_logs/sd_g4c2d2
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/same_different/study.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.glyph_cells=4 data.changed_cells=2 data.distractors=2 name=sd_g4c2d2 "workdir=$LOG/{name}"
echo rc $?
date -u; uptime

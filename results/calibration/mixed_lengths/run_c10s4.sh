#!/bin/bash
# Pathfinder of mixed lengths (data.shortest_contour=4 up to contour_length=10, 2 distractors),
# four patterns x seeds 0-1, 2 epochs, from a worktree at a fixed commit (RUN.md here).
WT=/work/wt/mixed
LOG=/work/calib_logs/mixed_c10s4d2
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/clearance/study.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=10 data.shortest_contour=4 data.distractors=2 'space.pattern=[conv, last_half, mamba_only, attn_only]' 'study.seeds=[0, 1]' name=mixed_c10s4d2_lr1e3 "workdir=$LOG/{name}"
echo rc $?
date -u; uptime

#!/bin/bash
# Recipe probe: contour 6 / 2 distractors / 5 epochs, centred joints, no curriculum, peak lr 5e-4
# (half the lr of clearance/RUN.md section 9); attn_only and last_half, seed 1 (at lr 1e-3: 57.0,
# only begun to move in epoch 5, and 89.7, left in epoch 5): does seed 0's early exit repeat?
# From a worktree whose trials record every epoch's loss (the report's exit epochs).
WT=/work/wt/lr
LOG=/work/calib_logs/lr5e4_c6d2_s1
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/clearance/study.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=5 train.lr=5e-4 'space.pattern=[last_half, attn_only]' 'study.seeds=[1]' name=lr5e4_c6d2_e5_s1 "workdir=$LOG/{name}" $CHECK
echo rc $?
date -u; uptime

#!/bin/bash
# Recipe probe: contour 6 / 2 distractors / 5 epochs, centred joints, no curriculum, peak lr 5e-4
# (half the lr of clearance/RUN.md section 7); attn_only and last_half, seed 0 (at lr 1e-3: 51.4,
# never left the plateau, and 80.6, left in epoch 4).
WT=/work/wt/cur
LOG=/work/calib_logs/lr5e4_c6d2
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/clearance/study.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=5 train.lr=5e-4 'space.pattern=[last_half, attn_only]' 'study.seeds=[0]' name=lr5e4_c6d2_e5_s0 "workdir=$LOG/{name}" $CHECK
echo rc $?
date -u; uptime

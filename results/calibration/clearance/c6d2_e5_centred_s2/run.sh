#!/bin/bash
# Section 9's probe with seed 2 (last_half and mamba_only, contour 6, 2 distractors, centred joints,
# 5 epochs), from a worktree whose trials record train_loss and num_classes (RUN.md, section 10).
WT=/work/wt/c6s2
LOG=/work/calib_logs/c6d2_e5_centred_s2
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/clearance/study.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=5 'space.pattern=[last_half, mamba_only]' 'study.seeds=[2]' name=clear_c6d2_e5_centred_lr1e3_s2 "workdir=$LOG/{name}"
echo rc $?
date -u; uptime

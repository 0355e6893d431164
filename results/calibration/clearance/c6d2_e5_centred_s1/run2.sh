#!/bin/bash
# Section 7's probe again with seed 1 (conv and attn_only, contour 6, 2 distractors, centred joints,
# 5 epochs), from the same worktree at 10903e1 (RUN.md, section 9).
WT=/work/wt/joints
LOG=/work/calib_logs/c6d2_e5_centred_s1b
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/clearance/study.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=5 'space.pattern=[conv, attn_only]' 'analysis.reference={pattern: conv, dim: 24}' 'study.seeds=[1]' name=clear_c6d2_e5_centred_lr1e3_s1_controls "workdir=$LOG/{name}"
echo rc $?
date -u; uptime

#!/bin/bash
# same_different, the easiest setting (glyph_cells 2, changed_cells 1, no distractors): the two ends
# (conv, attn_only), 5 epochs = 2,375 steps, seed 0, from a worktree at a later commit (the plateau records) (results/calibration/same_different/RUN.md).
WT=/work/wt/sd2
LOG=/work/calib_logs/sd_g2c1d0_e5
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/same_different/study.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.glyph_cells=2 data.changed_cells=1 data.distractors=0 'space.pattern=[conv, attn_only]' 'analysis.reference={pattern: conv, dim: 24}' train.epochs=5 name=sd_g2c1d0_e5 "workdir=$LOG/{name}"
echo rc $?
date -u; uptime

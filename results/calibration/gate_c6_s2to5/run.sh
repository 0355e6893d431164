#!/bin/bash
# The gate's own study at the lr 5e-4 recipe (contour 6, 2 distractors, 3 epochs) with its four
# seeds planned from the start: seeds 2-5, a study of its own. A grid study's seed choices are
# fixed by its first trial, so the seeds 0-1 study (../gate_c6_lr5e4_e3) cannot gain seeds;
# this one resumes (same command) until its 16 trials are done. Seeds vary slowest, so a
# partial run holds whole seed blocks.
WT=/work/wt/g3
LOG=/work/calib_logs/gate_c6_s2to5
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/experiments/calibration.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4 'study.seeds=[2, 3, 4, 5]' name=gate_c6_lr5e4_e3_s2to5 "workdir=$LOG/{name}" $CHECK
echo rc $?
date -u; uptime

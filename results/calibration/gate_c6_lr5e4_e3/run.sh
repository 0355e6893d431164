#!/bin/bash
# Gate candidate (issue 14, eleventh session): experiments/calibration.yaml, all four patterns, at
# the recipe the lr 5e-4 probes suggest: contour 6, 2 distractors, peak lr 5e-4, 3 epochs
# (1,425 steps). Seeds 0 and 1. (A grid study cannot gain seeds later: seeds 2-5 are their own
# study, ../gate_c6_s2to5/run.sh.)
WT=/work/wt/g3
LOG=/work/calib_logs/gate_c6_lr5e4_e3
SEEDS=${SEEDS:-[0, 1]}
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/experiments/calibration.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4 "study.seeds=$SEEDS" name=gate_c6_lr5e4_e3 "workdir=$LOG/{name}" $CHECK
echo rc $?
date -u; uptime

#!/bin/bash
# Recipe probe on the seeds the lottery caught: last_half and mamba_only seed 2 stayed on the
# contour-6 plateau for all 3 epochs at peak lr 5e-4 (gate_c6_s2to5: 52.4, 50.8 %). The same
# init and data order at peak lr 2.5e-4, nothing else changed: does halving the lr again free them?
WT=/work/wt/lr25
LOG=/work/calib_logs/lr25e5_c6_s2
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/clearance/study.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=2.5e-4 'space.pattern=[last_half, mamba_only]' 'study.seeds=[2]' name=lr25e5_c6_e3_s2 "workdir=$LOG/{name}" $CHECK
echo rc $?
date -u; uptime

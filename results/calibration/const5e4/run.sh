#!/bin/bash
# Recipe probe on the seeds the lottery caught: last_half and mamba_only seed 2 stayed on the
# contour-6 plateau for all 3 epochs at peak lr 5e-4 (gate_c6_s2to5: 52.4, 50.8 %). The same
# init and data order at lr 5e-4 held constant after the warm-up (train.min_lr=5e-4: the cosine
# decays from 5e-4 to 5e-4), nothing else changed: is it the 3-epoch cosine's early decay that
# leaves them there?
WT=/work/wt/lr25
LOG=/work/calib_logs/const5e4_c6_s2
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/clearance/study.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4 train.min_lr=5e-4 'space.pattern=[last_half, mamba_only]' 'study.seeds=[2]' name=const5e4_c6_e3_s2 "workdir=$LOG/{name}" $CHECK
echo rc $?
date -u; uptime

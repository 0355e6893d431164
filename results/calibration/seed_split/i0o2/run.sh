#!/bin/bash
# Which half of seed 2 holds the networks on the plateau: its initialisation or its data order?
# last_half at the gate_c6_s2to5 recipe (contour 6, 2 distractors, 3 epochs, peak lr 5e-4,
# cosine) with init seed 0 and data order seed 2 (data.order_seed). Seed 0 (init 0, order 0)
# left the plateau in epoch 3 (88.0 %); seed 2 (init 2, order 2) never did (52.4 %).
WT=/work/wt/lr25
LOG=/work/calib_logs/split_i0o2
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/clearance/study.yaml --no-progress --workers 1 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4 data.order_seed=2 'space.pattern=[last_half]' 'study.seeds=[0]' name=split_i0o2_c6_e3 "workdir=$LOG/{name}" $CHECK
echo rc $?
date -u; uptime

#!/bin/bash
# Which half of seed 2 holds the networks on the plateau: its initialisation or its data order?
# mamba_only at the gate_c6_s2to5 recipe (contour 6, 2 distractors, 3 epochs, peak lr 5e-4,
# cosine) with init seed 2 and data order seed 0 (data.order_seed). Seed 0 (init 0, order 0)
# left the plateau in epoch 3 (92.6 %); seed 2 (init 2, order 2) never did (50.8 %).
WT=/work/wt/lr25
LOG=/work/calib_logs/split_m_i2o0
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/clearance/study.yaml --no-progress --workers 1 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4 data.order_seed=0 'space.pattern=[mamba_only]' 'analysis.reference={pattern: mamba_only, dim: 24}' 'study.seeds=[2]' name=split_m_i2o0_c6_e3 "workdir=$LOG/{name}" $CHECK
echo rc $?
date -u; uptime

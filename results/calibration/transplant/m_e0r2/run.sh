#!/bin/bash
# Transplant: mamba_only with stem and stages 1-2 from seed 0's initial weights, stages 3-4 and head
# from seed 2's, data order 0, at the gate_c6_s2to5 recipe (contour 6, 2 distractors, 3 epochs,
# peak lr 5e-4 cosine). Init 0 / order 0 left the plateau in epoch 3 (92.6 %); init 2 / order 0
# never did (51.6 %, seed_split/m_i2o0).
WT=/work/wt/tp2
LOG=/work/calib_logs/tp_m_e0r2
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python $WT/results/calibration/transplant/transplant.py $WT/results/calibration/clearance/study.yaml --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4 --pattern mamba_only --early-seed 0 --rest-seed 2 --order-seed 0 --out $LOG/m_e0r2.csv
echo rc $?
date -u; uptime

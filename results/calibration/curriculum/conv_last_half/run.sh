#!/bin/bash
# Curriculum probe: contour 6 / 2 distractors / 5 epochs (sections 7, 9, 10's setting) with the
# first 2 epochs on clean contour 2 (data.curriculum); conv and last_half, seed 0 (section 7 of
# clearance/RUN.md without the curriculum: 99.7 and 80.6).
WT=/work/wt/cur
LOG=/work/calib_logs/cur_c6d2_s0
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/clearance/study.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=5 'data.curriculum=[{epochs: 2, contour_length: 2, distractors: 0}]' 'space.pattern=[conv, last_half]' 'study.seeds=[0]' name=cur2c2_c6d2_e5_lr1e3_s0 "workdir=$LOG/{name}" $CHECK
echo rc $?
date -u; uptime

#!/bin/bash
# Curriculum probe: contour 6 / 2 distractors / 5 epochs (sections 7, 9, 10's setting) with the
# first 2 epochs on clean contour 2 (data.curriculum); attn_only, seeds 0 and 1 (both never left
# the plateau there without the curriculum).
WT=/work/wt/cur
LOG=/work/calib_logs/cur_c6d2_attn
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/clearance/study.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=5 'data.curriculum=[{epochs: 2, contour_length: 2, distractors: 0}]' 'space.pattern=[attn_only]' 'study.seeds=[0, 1]' 'analysis.reference={pattern: attn_only, dim: 24}' name=cur2c2_c6d2_e5_lr1e3_attn "workdir=$LOG/{name}" $CHECK
echo rc $?
date -u; uptime

#!/bin/bash
cd /work/calib_logs/c8d2_e5_centred
date -u; uptime; echo "commit $(git -C /work/wt/joints rev-parse HEAD)"
PYTHONPATH=/work/wt/joints /work/main/.venv/bin/python -m mvlab sweep /work/wt/joints/results/calibration/clearance/study.yaml --no-progress --workers 2 --storage /work/calib_logs/c8d2_e5_centred/optuna.journal --set train.threads=1 data.contour_length=8 data.distractors=2 train.epochs=5 'space.pattern=[conv, last_half]' name=clear_c8d2_e5_centred_lr1e3 'workdir=/work/calib_logs/c8d2_e5_centred/{name}'
echo rc $?
date -u; uptime

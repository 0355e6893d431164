#!/bin/bash
# Lever probe on an initialisation the lottery caught: last_half seed 2 (init 2 holds it on the
# contour-6 plateau whatever the data order: seed_split) with layer scale 1e-5 on every mixer and
# attention block (layer_scale=1e-5, the value of MambaVision-B/L; gamma is created with ones, so
# every other weight starts exactly as before). Gate_c6_s2to5 recipe: 3 epochs, lr 5e-4 cosine.
WT=/work/wt/lr25
LOG=/work/calib_logs/ls_s2
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/results/calibration/clearance/study.yaml --no-progress --workers 1 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4 'model=stem=16 stem_stride=2 drop_path=0.1 layer_scale=1e-5 | depth=1 width=24 | depth=3 width=48 | depth=8 width=96 pattern=last_half heads=4 | depth=4 width=192 pattern=last_half heads=8' 'space.pattern=[last_half]' 'study.seeds=[2]' name=ls1e5_c6_e3_s2 "workdir=$LOG/{name}" $CHECK
echo rc $?
date -u; uptime

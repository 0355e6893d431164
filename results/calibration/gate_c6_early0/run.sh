#!/bin/bash
# The gate's study at the lr 5e-4 recipe (contour 6, 2 distractors, 3 epochs) with every trial's
# stem and stages 1-2 starting from seed 0's weights (train.early_init_seed=0) and seeds 1-4
# varying the rest (stages 3-4, head, drop-path, data order). Seed 0 is left out: with
# early_init_seed=0 its trials would repeat ../gate_c6_lr5e4_e3's seed 0 bit for bit. Seeds vary
# slowest, so a partial run holds whole seed blocks; the same command resumes it.
WT=/work/wt/e0
LOG=/work/calib_logs/gate_c6_early0
cd $LOG
date -u; uptime; echo "commit $(git -C $WT rev-parse HEAD)"
PYTHONPATH=$WT /work/main/.venv/bin/python -m mvlab sweep $WT/experiments/calibration.yaml --no-progress --workers 2 --storage $LOG/optuna.journal --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4 train.early_init_seed=0 'study.seeds=[1, 2, 3, 4]' name=gate_c6_early0 "workdir=$LOG/{name}" $CHECK
echo rc $?
date -u; uptime

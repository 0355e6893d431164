#!/bin/bash
# Rebuilds this folder's report from the journal beside it (run from the repository root).
HERE=results/calibration/const5e4
mvlab report results/calibration/clearance/study.yaml --storage $HERE/optuna.journal \
  --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4 train.min_lr=5e-4 \
  'space.pattern=[last_half, mamba_only]' 'study.seeds=[2]' name=const5e4_c6_e3_s2 \
  "workdir=/tmp/mvlab_const5e4/{name}" --out $HERE

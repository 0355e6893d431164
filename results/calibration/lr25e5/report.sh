#!/bin/bash
# Rebuilds this folder's report from the journal beside it (run from the repository root).
HERE=results/calibration/lr25e5
mvlab report results/calibration/clearance/study.yaml --storage $HERE/optuna.journal \
  --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=2.5e-4 \
  'space.pattern=[last_half, mamba_only]' 'study.seeds=[2]' name=lr25e5_c6_e3_s2 \
  "workdir=/tmp/mvlab_lr25e5/{name}" --out $HERE

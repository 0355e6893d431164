#!/bin/bash
# Rebuilds this folder's report from the journal beside it (run from the repository root).
HERE=results/calibration/gate_c6_s2to5
mvlab report experiments/calibration.yaml --storage $HERE/optuna.journal --set train.threads=1 \
  data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4 \
  'study.seeds=[2, 3, 4, 5]' name=gate_c6_lr5e4_e3_s2to5 "workdir=/tmp/mvlab_gate_s2to5/{name}" \
  --out $HERE

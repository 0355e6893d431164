#!/bin/bash
# Rebuilds this folder's report from the journal beside it (run from the repository root).
HERE=results/calibration/seed_split/i0o2
mvlab report results/calibration/clearance/study.yaml --storage $HERE/optuna.journal \
  --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4 \
  data.order_seed=2 'space.pattern=[last_half]' 'study.seeds=[0]' name=split_i0o2_c6_e3 \
  "workdir=/tmp/mvlab_split_i0o2/{name}" --out $HERE

#!/bin/bash
# Rebuilds this folder's report from the journal beside it (run from the repository root).
HERE=results/calibration/seed_split/m_i2o0
mvlab report results/calibration/clearance/study.yaml --storage $HERE/optuna.journal \
  --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4 \
  data.order_seed=0 'space.pattern=[mamba_only]' 'analysis.reference={pattern: mamba_only, dim: 24}' \
  'study.seeds=[2]' name=split_m_i2o0_c6_e3 "workdir=/tmp/mvlab_split_m_i2o0/{name}" --out $HERE

#!/bin/bash
# Rebuilds this folder's report from the journal beside it (run from the repository root).
HERE=results/calibration/layer_scale
mvlab report results/calibration/clearance/study.yaml --storage $HERE/optuna.journal \
  --set train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4 \
  'model=stem=16 stem_stride=2 drop_path=0.1 layer_scale=1e-5 | depth=1 width=24 | depth=3 width=48 | depth=8 width=96 pattern=last_half heads=4 | depth=4 width=192 pattern=last_half heads=8' \
  'space.pattern=[last_half]' 'study.seeds=[2]' name=ls1e5_c6_e3_s2 \
  "workdir=/tmp/mvlab_ls1e5/{name}" --out $HERE

#!/bin/bash
# Rebuilds this folder's reports from the journal beside it (run from the repository root):
#   bash results/calibration/gate_c6_early0/report.sh
# The gate as the study file states it (band over every configuration), then the same with
# conv's control side exempt from the band (analysis.gate.band_exempt, docs/studies.md): conv
# is the control that must differ, and it saturates at this recipe (../gate_c6_lr5e4_e3/).
HERE=results/calibration/gate_c6_early0
SET=(train.threads=1 data.contour_length=6 data.distractors=2 train.epochs=3 train.lr=5e-4
     train.early_init_seed=0 "study.seeds=[1, 2, 3, 4]" name=gate_c6_early0
     "workdir=/tmp/mvlab_gate_early0/{name}")
GATE='analysis.gate={band: [60, 95], band_exempt: [{pattern: conv, dim: 24}], controls: [
  {name: conv vs last_half, a: {pattern: conv, dim: 24}, b: {pattern: last_half, dim: 24}},
  {name: conv vs mamba_only, a: {pattern: conv, dim: 24}, b: {pattern: mamba_only, dim: 24}},
  {name: conv vs attn_only, a: {pattern: conv, dim: 24}, b: {pattern: attn_only, dim: 24}},
  {name: mamba_only vs attn_only, a: {pattern: mamba_only, dim: 24},
   b: {pattern: attn_only, dim: 24}, expect: resolved}]}'
mvlab report experiments/calibration.yaml --storage $HERE/optuna.journal --set "${SET[@]}" \
  --out $HERE || exit 1
mvlab report experiments/calibration.yaml --storage $HERE/optuna.journal --set "${SET[@]}" \
  "$GATE" --out $HERE/band_exempt

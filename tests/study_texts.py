"""Study files the tests write: one tiny grid (the tiny preset at 16 px, 2 patterns x branch on/off
x 2 seeds) that tests extend with the sections they need."""

TINY_GRID = """\
name: t
model: tiny
data:
  resolution: 16
  per_class: 10
train:
  epochs: 2
  batch_size: 8
study:
  kind: grid
  seeds: [0, 1]
space:
  pattern: [last_half, attn_only]
  branch: [on, off]
"""

"""Sanity check that the generated Pathfinder labels are learnable at all (PILOT side check):
a plain 5-conv CNN (not an mvlab model) on the easiest setting (32 px, contour_length=2,
distractors=0), 6,000 train and 1,000 val images, AdamW 1e-3, batch 64, one thread, until
300 CPU seconds. Output: sanity_small_cnn.log.

    python results/calibration/sanity_small_cnn.py
"""
from __future__ import annotations

import time

import torch
from torch import nn

from mvlab.data import DataConfig
from mvlab.data.procedural import definition, generate_split


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = DataConfig(dataset="pathfinder", resolution=32, per_class=3000, val_per_class=500,
                     contour_length=2, distractors=0)
    spec = definition(cfg)
    x_train, y_train = generate_split(spec, "train")
    x_val, y_val = generate_split(spec, "val")
    x_train = torch.from_numpy(x_train).float().div(255)[:, None]
    x_val = torch.from_numpy(x_val).float().div(255)[:, None]
    y_train, y_val = torch.from_numpy(y_train), torch.from_numpy(y_val)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(64, 2))
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    start, step = time.process_time(), 0
    for epoch in range(100):
        perm = torch.randperm(len(y_train))
        for i in range(0, len(y_train) - 63, 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        with torch.no_grad():
            acc = (net(x_val).argmax(1) == y_val).float().mean().item() * 100
        cpu = time.process_time() - start
        print(f"epoch {epoch + 1} steps {step} loss {loss.item():.3f} val {acc:.1f} cpu_s {cpu:.0f}",
              flush=True)
        if cpu > 300:
            break


if __name__ == "__main__":
    main()

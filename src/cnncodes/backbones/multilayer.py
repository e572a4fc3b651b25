"""Codes pooled from several depths of one network: mid-level features help when the source images
(32x32 CIFAR) are far from the photos the network was trained on."""
from __future__ import annotations

import torch
from torch import nn


class MultiLayerPool(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        seq, taps = model.stages()
        self.seq, self.taps = nn.ModuleList(seq), set(taps)

    def forward(self, x):
        pooled = []
        for i, stage in enumerate(self.seq):
            x = stage(x)
            if i in self.taps:
                pooled.append(x.mean((2, 3)))
        return torch.cat(pooled, 1)

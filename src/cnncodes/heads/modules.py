"""Trained heads as PyTorch modules (codes -> logits), for export: standardisation is folded into the first
linear layer, so the exported graph holds one matrix multiply where the NumPy head does three steps."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class CodeNormalization(nn.Module):
    """normalize_codes in torch: sqrt (signed square root) or l2 (unit length)."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "sqrt":
            return torch.sign(x) * torch.sqrt(torch.abs(x))
        return x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + 1e-12)


def folded_linear(mean: np.ndarray, scale: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> nn.Linear:
    """((x - mean) / scale) @ weight + bias as one layer: x @ (weight / scale) + (bias - (mean / scale) @ weight)."""
    w = weight.astype(np.float64) / scale.astype(np.float64)[:, None]
    b = bias.astype(np.float64) - (mean.astype(np.float64) / scale) @ weight.astype(np.float64)
    layer = nn.Linear(*weight.shape)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w.T.astype(np.float32)))
        layer.bias.copy_(torch.from_numpy(b.astype(np.float32)))
    return layer


def standardized_network(normalize: str, mean, scale, weight, bias, *rest: nn.Module) -> nn.Sequential:
    """[normalisation] -> folded first layer -> the remaining layers."""
    first = [CodeNormalization(normalize)] if normalize != "none" else []
    return nn.Sequential(*first, folded_linear(mean, scale, weight, bias), *rest).eval()

"""Resize and normalise exactly as each network was trained: wrong preprocessing silently costs accuracy."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Preprocess:
    """Everything between decoded RGB pixels and the network input; part of every codes fingerprint."""

    size: int
    resize: str  # "bicubic" (Pillow) or "tf1_bilinear" (TensorFlow 1 ResizeBilinear, no half-pixel centres)
    mean: float
    std: float
    flip: bool = False

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, size, size) float32, normalised."""
        if self.flip:
            rgb = np.ascontiguousarray(rgb[:, ::-1])
        if self.resize == "bicubic":
            if rgb.shape[:2] != (self.size, self.size):
                rgb = np.array(Image.fromarray(rgb).resize((self.size, self.size), Image.BICUBIC))
            x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()
        elif self.resize == "tf1_bilinear":
            x = tf1_resize_bilinear(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float(), self.size)
        else:
            raise ValueError(f"unknown resize method {self.resize!r}")
        return (x - self.mean) / self.std


@lru_cache(maxsize=64)
def _tf1_bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Interpolation weights of TF1 ResizeBilinear(align_corners=False): source = dest * n_in / n_out."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, lo), 1 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)
    return m.float()


def tf1_resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (C, H, W) as the 2015 Inception graph did; torch's bilinear uses half-pixel centres and differs.

    Written by hand because neither torch nor Pillow offers the TF1 legacy sampling grid.
    """
    wy = _tf1_bilinear_matrix(x.shape[1], size)
    wx = _tf1_bilinear_matrix(x.shape[2], size)
    return wy @ x @ wx.T

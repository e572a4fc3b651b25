"""Resize and normalise exactly as each network was trained: wrong preprocessing silently costs accuracy."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Preprocess:
    """Everything between decoded RGB pixels and the network input; part of every codes fingerprint.

    crop: the share of the shorter side the centre crop keeps (the shorter side is resized to size / crop,
    aspect kept, then the centre size x size is cut: the evaluation transform of timm and TensorFlow); None
    squashes the whole image to size x size (what the 2015 Inception graph did).
    small_crop: the same choice for images smaller than the input (upsampled, such as 32x32 CIFAR), which is
    made on validation accuracy (see the registry).
    """

    size: int
    resize: str  # "bicubic" (Pillow) or "tf1_bilinear" (TensorFlow 1 ResizeBilinear, no half-pixel centres)
    mean: float
    std: float
    crop: float | None = None
    small_crop: float | None = None
    flip: bool = False

    @property
    def min_decode_side(self) -> int:
        """The shortest side a decoded image may have without losing pixels the network would see."""
        return int(self.size / self.crop) if self.crop else self.size

    def geometry(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(resized height, resized width, top, left) of the crop window for an image of this size."""
        fraction = self.crop if min(height, width) >= self.size else self.small_crop
        if fraction is None:
            return self.size, self.size, 0, 0
        short = int(self.size / fraction)  # timm and torchvision floor it too: 224 / 0.875 = 256
        scale = short / min(height, width)
        h, w = (short, max(self.size, int(width * scale))) if height <= width else (max(self.size, int(height * scale)), short)
        return h, w, int(round((h - self.size) / 2)), int(round((w - self.size) / 2))

    @property
    def pixel_dtype(self) -> type:
        """What window() returns: Pillow's bicubic output is uint8; TF1 bilinear values are fractions."""
        return np.uint8 if self.resize == "bicubic" else np.float32

    @property
    def channels(self) -> int:
        """Channels of a window: bicubic windows carry a 4th, constant one (Pillow's RGBX, nearly free in the resize:
        Pillow keeps RGB in 4 bytes a pixel), which the int8 graph's first convolution takes with zero weights, the
        same sums and a faster kernel than on 3 channels; everything else reads the first 3."""
        return 4 if self.resize == "bicubic" else 3

    def window(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (size, size, channels) pixel values (0-255) the network sees: flipped, resized, cropped.

        Kept as pixels, not normalised: a batch of uint8 windows is a quarter of the float one, and the codes graphs
        take it as it is (onnx_graphs.pixels_graph)."""
        if self.flip:
            rgb = np.ascontiguousarray(rgb[:, ::-1])
        h, w, top, left = self.geometry(*rgb.shape[:2])
        if self.resize == "bicubic":
            if rgb.shape[:2] != (h, w):  # RGBX gives the RGB resize's very channels (tests/test_preprocess.py)
                out = np.asarray(Image.fromarray(rgb).convert("RGBX").resize((w, h), Image.BICUBIC))
            else:
                out = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)
        elif self.resize == "tf1_bilinear":
            out = tf1_resize_bilinear(rgb, h, w)
        else:
            raise ValueError(f"unknown resize method {self.resize!r}")
        return np.ascontiguousarray(out[top:top + self.size, left:left + self.size])

    def network_input(self, windows: np.ndarray) -> np.ndarray:
        """(N, size, size, channels) windows -> (N, 3, size, size) float32, normalised: what the network takes, in the plain
        NCHW layout (the transposed view would carry channels-last strides into torch, which computes differently)."""
        rgb = windows[..., :3].transpose(0, 3, 1, 2)
        return np.ascontiguousarray((rgb.astype(np.float32) - self.mean) / self.std)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, size, size) float32, normalised: one image's network input."""
        return self.network_input(self.window(rgb)[None])[0]

    def pixels(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (size, size, 3) uint8: the input of an exported model, which normalises itself.

        Exact for bicubic resizing (Pillow's output is uint8); TF1 bilinear values are rounded to the nearest level."""
        x = self.window(rgb)[..., :3]
        return np.ascontiguousarray(x) if x.dtype == np.uint8 else np.clip(np.round(x), 0, 255).astype(np.uint8)


@lru_cache(maxsize=64)
def _tf1_bilinear_matrix(n_in: int, n_out: int):
    """Interpolation weights of TF1 ResizeBilinear(align_corners=False): source = dest * n_in / n_out."""
    import torch

    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, lo), 1 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)
    return m.float()


def tf1_resize_bilinear(rgb: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """Resize (H, W, C) as the 2015 Inception graph did; torch's bilinear uses half-pixel centres and differs.

    Written by hand because neither torch nor Pillow offers the TF1 legacy sampling grid; computed with torch's
    float32 matrix products, whose results the cached Inception codes were made with.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()
    wy = _tf1_bilinear_matrix(x.shape[1], height)
    wx = _tf1_bilinear_matrix(x.shape[2], width or height)
    return (wy @ x @ wx.T).permute(1, 2, 0).numpy()

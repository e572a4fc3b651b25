import numpy as np
import torch

from cnncodes.preprocess import Preprocess, tf1_resize_bilinear


def test_tf1_bilinear_uses_top_left_aligned_grid():
    # TF1 ResizeBilinear(align_corners=False): source = dest * in / out, no half-pixel offset.
    x = torch.tensor([[[0.0, 10.0]]])  # 1 x 1 x 2
    y = tf1_resize_bilinear(x.expand(1, 2, 2).clone(), 4)
    assert torch.allclose(y[0, 0], torch.tensor([0.0, 5.0, 10.0, 10.0]))


def test_preprocess_scales_and_flips():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[:, 0] = 255
    pp = Preprocess(size=2, resize="bicubic", mean=127.0, std=128.0)
    out = pp(rgb)
    assert out.shape == (3, 2, 2)
    assert torch.allclose(out[0, 0], torch.tensor([1.0, -127 / 128]))
    flipped = Preprocess(size=2, resize="bicubic", mean=127.0, std=128.0, flip=True)(rgb)
    assert torch.allclose(flipped[0, 0], torch.tensor([-127 / 128, 1.0]))

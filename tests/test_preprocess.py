import numpy as np

from cnncodes.backbones.preprocess import Preprocess, tf1_resize_bilinear


def test_tf1_bilinear_uses_top_left_aligned_grid():
    # TF1 ResizeBilinear(align_corners=False): source = dest * in / out, no half-pixel offset.
    x = np.zeros((2, 2, 1), np.uint8)
    x[:, 1] = 10
    y = tf1_resize_bilinear(x, 4)
    np.testing.assert_allclose(y[0, :, 0], [0.0, 5.0, 10.0, 10.0])


def test_preprocess_scales_and_flips():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[:, 0] = 255
    pp = Preprocess(size=2, resize="bicubic", mean=127.0, std=128.0)
    out = pp(rgb)
    assert out.shape == (3, 2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], [1.0, -127 / 128])
    flipped = Preprocess(size=2, resize="bicubic", mean=127.0, std=128.0, flip=True)
    np.testing.assert_array_equal(flipped(rgb)[0, 0], [-127 / 128, 1.0])
    assert flipped.window(rgb).dtype == np.uint8 and flipped.window(rgb)[0, :, 0].tolist() == [0, 255]
    assert flipped.window(rgb).shape == (2, 2, 4) and flipped.pixels(rgb).shape == (2, 2, 3)


def test_bicubic_windows_are_pillows_rgb_resize_with_a_constant_fourth_channel():
    """Windows are resized in Pillow's RGBX mode (4 channels for the int8 stem): the RGB channels must be Pillow's
    RGB resize exactly, upsampling tiny images and downsampling photos alike, or the cached codes would change."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pp = Preprocess(size=224, resize="bicubic", mean=127.0, std=128.0, crop=0.875, small_crop=None)
    for h, w in [(32, 32), (17, 45), (480, 640), (700, 333), (256, 300)]:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        rh, rw, top, left = pp.geometry(h, w)
        expected = np.asarray(Image.fromarray(rgb).resize((rw, rh), Image.BICUBIC))[top:top + 224, left:left + 224]
        window = pp.window(rgb)
        assert window.shape == (224, 224, 4) and (window[..., 3] == 255).all()
        np.testing.assert_array_equal(window[..., :3], expected)
        np.testing.assert_array_equal(pp.pixels(rgb), expected)


def test_photos_get_the_centre_crop_and_small_images_their_own_choice():
    """A photo: shorter side to size / crop (aspect kept), centre size x size; an image smaller than the input
    follows small_crop (None squashes it whole)."""
    pp = Preprocess(size=224, resize="bicubic", mean=0.0, std=1.0, crop=0.875, small_crop=None)
    assert pp.geometry(480, 640) == (256, 341, 16, 58)  # 256 = 224 / 0.875; 341 = int(640 * 256 / 480)
    assert pp.geometry(640, 480) == (341, 256, 58, 16)
    assert pp.geometry(32, 32) == (224, 224, 0, 0)
    assert Preprocess(224, "bicubic", 0.0, 1.0, crop=0.875, small_crop=0.875).geometry(32, 32) == (256, 256, 16, 16)
    # the kept window is the centre 420 x 420 pixels (224 / (256 / 480)): bright inside, dark outside
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[30:450, 110:530] = 255
    out = pp(rgb)
    assert out.shape == (3, 224, 224)
    assert out[:, 3:221, 3:221].min() > 250 and out.max() <= 255  # bicubic overshoot clipped to pixel values


def test_tf1_bilinear_resizes_to_a_rectangle():
    x = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    assert tf1_resize_bilinear(x, 4, 6).shape == (4, 6, 1)
    pp = Preprocess(size=4, resize="tf1_bilinear", mean=128.0, std=128.0)
    assert pp.window(np.zeros((2, 3, 3), np.uint8)).dtype == np.float32 and pp.pixels(x.repeat(3, 2)).dtype == np.uint8

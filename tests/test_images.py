"""Every odd or broken image is either read correctly or refused with a reason."""
import io

import json

import numpy as np
import pytest
from PIL import Image

from cnncodes.data.images import BadImage, load_rgb


def save(img: Image.Image, path, fmt, **kw):
    img.save(path, format=fmt, **kw)
    return path


def test_png_named_jpg_is_read(tmp_path):
    p = save(Image.new("RGB", (8, 8), (10, 20, 30)), tmp_path / "x.jpg", "PNG")
    assert load_rgb(p)[0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize("mode,colour", [("L", 128), ("CMYK", (0, 0, 0, 0)), ("P", 3)])
def test_other_modes_become_rgb(tmp_path, mode, colour):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    p = save(Image.new(mode, (9, 7), colour), tmp_path / f"x.{fmt.lower()}", fmt)
    arr = load_rgb(p)
    assert arr.shape == (7, 9, 3) and arr.dtype == np.uint8


def test_rgba_is_composited_on_white(tmp_path):
    p = save(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), tmp_path / "a.png", "PNG")
    assert load_rgb(p)[0, 0].tolist() == [255, 255, 255]


def test_16bit_png_is_rescaled_not_clipped(tmp_path):
    arr = np.full((5, 5), 32768, np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(arr).save(p)
    assert 120 <= load_rgb(p)[0, 0, 0] <= 135


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100)
    with Image.open(p) as im:
        assert im.n_frames == 2  # really animated: a second frame of another colour
    rgb = load_rgb(p)
    assert rgb.shape == (6, 6, 3) and rgb[0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif)
    assert load_rgb(p).shape == (20, 10, 3)


def test_one_pixel_image(tmp_path):
    p = save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "one.png", "PNG")
    assert load_rgb(p).shape == (1, 1, 3)


def test_refusals_have_reasons(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "JPEG")
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(buf.getvalue()[:200])
    for path in (empty, text, truncated):
        with pytest.raises(BadImage) as err:
            load_rgb(path)
        assert str(err.value)


def png_header_only(path, width, height):
    """A valid PNG header claiming width x height pixels, with almost no data behind it."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


@pytest.mark.parametrize("width,height", [(40000, 40000), (10000, 9500)])
def test_decompression_bomb_is_refused_without_allocating(tmp_path, width, height):
    """1,600 MP (Pillow refuses it itself) and 95 MP (between Pillow's warning and error limits: only the
    per-image check refuses it), without touching the process's warning filters (decode runs in threads)."""
    import warnings

    before = list(warnings.filters)
    with pytest.raises(BadImage, match="decompression bomb"):
        load_rgb(png_header_only(tmp_path / "bomb.png", width, height))
    assert warnings.filters == before


@pytest.mark.parametrize("error", [__import__("struct").error("bad chunk"), IndexError("tile out of range"),
                                   ZeroDivisionError("zero-size strip")])
def test_any_decoder_failure_is_a_skip_with_its_reason(tmp_path, monkeypatch, error):
    from PIL import Image as PILImage

    p = tmp_path / "odd.png"
    PILImage.new("RGB", (4, 4)).save(p)

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(PILImage.Image, "convert", broken)
    with pytest.raises(BadImage, match=type(error).__name__):
        load_rgb(p)


def test_transient_read_errors_are_retried_never_cached_as_skips(tmp_path, monkeypatch):
    """EIO on a read says nothing about the file: retried, and if it persists the extraction stops and nothing is
    stored for it; the next run reads the file normally."""
    monkeypatch.setenv("CNNCODES_RUNTIME", "torch")  # about reading, in fresh caches: no ONNX graph export
    import errno

    from cnncodes import CnnCodesError, extract_codes, from_arrays
    from cnncodes.codes import inference

    monkeypatch.setattr(inference, "RETRY_SECONDS", (0.0, 0.0))
    images = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    ds = from_arrays(images, [0, 1, 0, 1, 0, 1], ["a", "b"], ["train"] * 6)
    calls = {"n": 0}

    def flaky(i, min_side=None, _read=ds.reader):
        if i == 2:
            calls["n"] += 1
            if calls["n"] <= failures:
                raise OSError(errno.EIO, "Input/output error")
        return _read(i, min_side)

    ds.reader = flaky
    failures = 2  # fewer than the retries: read on the third try
    codes = extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path / "a", progress=False)
    assert len(codes.ids) == 6 and not codes.skipped
    calls["n"], failures = 0, 10  # persists: the run stops, nothing is committed
    with pytest.raises(CnnCodesError, match="persisted"):
        extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path / "b", progress=False)
    from cnncodes.codes.store import MISSING, CodeStore
    from cnncodes.codes.identity import ExtractionIdentity

    root = next((tmp_path / "b").glob("stores/*/"))
    identity = ExtractionIdentity(**json.loads((root / "identity.json").read_text()))
    assert CodeStore(root, identity).lookup([ds.keys[2]])[0][0] == MISSING
    calls["n"], failures = 0, 0
    assert len(extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path / "b", progress=False).ids) == 6


def test_large_jpegs_decode_at_reduced_size_but_never_below_what_the_network_needs(tmp_path):
    big = np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "photo.jpg", quality=90)
    Image.fromarray(big).save(tmp_path / "photo.png")
    assert load_rgb(tmp_path / "photo.jpg").shape == (1500, 2000, 3)
    assert load_rgb(tmp_path / "photo.jpg", min_side=256).shape == (375, 500, 3)  # 1/4 scale: 1/8 would be 187
    assert load_rgb(tmp_path / "photo.jpg", min_side=1000).shape == (1500, 2000, 3)  # 1/2 would be 750
    assert load_rgb(tmp_path / "photo.png", min_side=256).shape == (1500, 2000, 3)  # PNG has no reduced decode

"""Decode any image Pillow reads into RGB uint8, or say precisely why it cannot be used."""
from __future__ import annotations

import errno
import io
import os

import numpy as np
from PIL import Image, ImageOps

# Read errors that say nothing about the file (busy disk, too many open files, a network mount's time-out).
TRANSIENT_ERRNOS = {errno.EIO, errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR, errno.ESTALE}

# Larger images are refused before decoding (a decompression bomb would allocate gigabytes). Pillow's default
# limit; checked here per image, because Pillow's own check only warns below twice its limit and turning that
# warning into an error needs process-wide warning filters, which decode threads must not touch.
MAX_PIXELS = 89_478_485


class BadImage(Exception):
    """The file is not an image we can use; the message is the reason shown in the skip list."""


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and float greyscale would be clipped to white by convert('RGB'); rescale them instead."""
    arr = np.asarray(im, dtype=np.float64)
    top = 65535.0 if arr.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


def _flatten_alpha(im: Image.Image) -> Image.Image:
    """Transparent pixels carry arbitrary colours; composite them on white as viewers show them."""
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba)


def load_rgb(path, min_side: int | None = None) -> np.ndarray:
    """Read the first frame of an image file as an (H, W, 3) uint8 array, EXIF orientation applied.

    min_side: a JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's draft mode) while
    both sides stay at least this long: a 12-megapixel photo for a 224-pixel network decodes in a fraction of
    the time and memory, and the network sees the same picture."""
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise BadImage(f"too many pixels (decompression bomb guard): {im.width} x {im.height} is more than "
                               f"{MAX_PIXELS:,}")
            if min_side and im.format == "JPEG":
                im.draft("RGB", (min_side, min_side))
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                im = _to_8bit(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = _flatten_alpha(im)
            arr = np.array(im.convert("RGB"))
    except Image.DecompressionBombError as exc:  # Pillow's own refusal, above twice its limit
        raise BadImage(f"too many pixels (decompression bomb guard): {exc}") from None
    except Image.UnidentifiedImageError:
        empty = (os.path.getsize(path) == 0 if isinstance(path, (str, os.PathLike)) else
                 isinstance(path, io.BytesIO) and not path.getbuffer().nbytes)  # (an upload's bytes)
        raise BadImage("an empty file" if empty else "not an image Pillow can read") from None
    except OSError as exc:
        if exc.errno is not None:
            raise  # opening or reading the file failed (gone, no permission, the disk): not a verdict on its content
        raise BadImage(f"cannot decode: {exc}") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders also raise struct.error, IndexError, ... on damaged files
        raise BadImage(f"cannot decode: {type(exc).__name__}: {exc}") from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadImage(f"unexpected decoded shape {arr.shape}")
    return arr


def square_thumbnail(rgb: np.ndarray, side: int) -> np.ndarray:
    """An image squashed to side x side pixels (bilinear): the cells of the report's, audit's and similar pages."""
    return np.asarray(Image.fromarray(rgb).resize((side, side), Image.BILINEAR))


def item_reader(items):
    """A dataset-style reader (i, min_side) -> RGB over a list of image paths, the bytes of image files (an upload)
    or (H, W, 3) uint8 arrays."""
    from pathlib import Path

    def read(i: int, min_side: int | None = None) -> np.ndarray:
        item = items[i]
        if isinstance(item, (bytes, bytearray)):
            return load_rgb(io.BytesIO(item), min_side)
        return load_rgb(item, min_side) if isinstance(item, (str, Path)) else np.asarray(item, np.uint8)

    return read

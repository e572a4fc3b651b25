"""The shell of a self-contained HTML page and its pictures as data URIs: the report, audit and similar pages are
files a person opens offline, so everything they show travels inside them."""
from __future__ import annotations

import base64
import html
import io

import numpy as np


def html_page(title: str, body: str, style: str) -> str:
    """A whole document: `title` is text (escaped here), `body` and `style` are HTML and CSS already."""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style></head><body>{body}</body></html>")


def image_uri(image: np.ndarray, kind: str = "PNG") -> str:
    """An (H, W, 3) uint8 image as a data URI: PNG (exact, for small thumbnails) or JPEG (quality 85: the map's
    thousands of hover images)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=kind, **({"quality": 85} if kind == "JPEG" else {}))
    return f"data:image/{kind.lower()};base64," + base64.b64encode(buf.getvalue()).decode()

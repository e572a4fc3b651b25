"""`cnncodes similar`'s page: the images of a collection most like some query images (pipeline.similar_images)."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

from .page import THUMB
from ..outputs.page import html_page, image_uri
from ..codes.view import Codes
from ..files import atomic_write
from ..data.images import BadImage, load_rgb, square_thumbnail


SELF_EXCLUDED = ("A query that is itself in the collection is not listed as its own neighbour, nor are files "
                 "with the same content (its copies).")


def write_similar_page(images: Sequence, found: list, codes: Codes, dataset, out) -> Path:
    """One strip per query: the query image, then its neighbours with id, label and similarity."""
    index = dataset.row_of() if dataset is not None else {}

    def thumb(rgb) -> str:
        return image_uri(square_thumbnail(rgb, THUMB))

    strips = []
    for path, result in zip(images, found):
        if isinstance(result, str):
            strips.append(f"<h3>{html.escape(str(path))}</h3><p>skipped: {html.escape(result)}</p>")
            continue
        try:
            query = f'<figure><img src="{thumb(load_rgb(path, THUMB))}" alt=""><figcaption>query</figcaption></figure>'
        except (BadImage, OSError):
            query = ""
        cells = []
        for row, sim in result:
            item = str(codes.ids[row])
            img = f'<img src="{thumb(dataset.read(index[item], THUMB))}" alt="">' if item in index else ""
            label = codes.class_names[codes.labels[row]] if codes.labels[row] >= 0 else "(no label)"
            cells.append(f"<figure>{img}<figcaption>{html.escape(item)}<br>{html.escape(label)}"
                         f" ({codes.splits[row]})<br>{sim:.3f}</figcaption></figure>")
        strips.append(f"<h3>{html.escape(str(path))}</h3><div class=strip>{query}{''.join(cells)}</div>")
    style = """body{font-family:sans-serif;margin:2em} figure{display:inline-block;margin:4px;width:130px;font-size:11px;
vertical-align:top} figcaption{overflow-wrap:anywhere} img{width:96px;height:96px;image-rendering:pixelated}
.strip figure:first-child img{outline:3px solid #36c}"""
    body = f"""<h1>Similar images in {html.escape(codes.backbone)} codes of {len(codes.ids):,} images</h1>
<p>Cosine similarity of codes centred on the collection's mean; exact search. {SELF_EXCLUDED}</p>{''.join(strips)}"""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, html_page("cnncodes: similar images", body, style).encode())
    return out

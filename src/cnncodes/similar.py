"""`cnncodes similar`: the images of a collection most like some query images, by their codes, as an HTML page."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import numpy as np

from .audit_page import THUMB, _uri
from .codes.view import Codes
from .files import atomic_write
from .codes.extract import codes_graphs, extract_codes
from .data.images import BadImage, load_rgb
from .predict import image_codes
from .model_file import load_model_file, model_graphs
from .settings import RunSettings


def collection(source, data=None) -> tuple[Codes, object, RunSettings | None, dict]:
    """(codes, dataset or None, settings or None, ONNX graphs) of a run folder (its images at `data`, default the
    recorded path), or of a codes.npz from `cnncodes extract`."""
    source = Path(source)
    if source.is_dir():
        settings = RunSettings.of_run(source).but(data=data)
        _, meta = load_model_file(source / "model.npz")
        graphs = model_graphs(source / "model.npz", meta)
        # a fine-tuned run's codes are activation maps: images are compared by the network's pooled codes
        settings = settings.but(backbone="+".join(n.split(":")[0] if ":cut=" in n else n for n in settings.backbone.split("+")))
        dataset = settings.load_data()
        codes = extract_codes(dataset, settings.backbone, progress=False, graphs=graphs, **settings.extract_options())
        return codes, dataset, settings, graphs or codes_graphs(settings, dataset)
    return Codes.load(source), None, None, {}


def similar_images(source, images: Sequence, k: int = 12, data=None) -> tuple[list, Codes, object]:
    """For each query image: the k most similar images of the collection as (row, similarity), or the reason the
    query could not be read."""
    codes, dataset, settings, graphs = collection(source, data)
    query, problems = image_codes(codes.backbone, list(images), graphs=graphs,
                                  **({"precision": settings.precision} if settings else {}))
    rows, sims = codes.nearest(query, k) if len(query) else (np.zeros((0, k), int), np.zeros((0, k)))
    found, usable = [], iter(zip(rows, sims))
    for n in range(len(images)):
        found.append(problems[n] if n in problems else list(zip(*next(usable))))
    return found, codes, dataset


def write_similar_page(images: Sequence, found: list, codes: Codes, dataset, out) -> Path:
    """One strip per query: the query image, then its neighbours with id, label and similarity."""
    index = {item_id: i for i, item_id in enumerate(dataset.ids)} if dataset is not None else {}

    def thumb(rgb) -> str:
        from PIL import Image

        return _uri(np.asarray(Image.fromarray(rgb).resize((THUMB, THUMB), Image.BILINEAR)))

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
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>cnncodes: similar images</title><style>
body{{font-family:sans-serif;margin:2em}} figure{{display:inline-block;margin:4px;width:130px;font-size:11px;
vertical-align:top}} img{{width:96px;height:96px;image-rendering:pixelated}} .strip figure:first-child img{{outline:3px
solid #36c}}</style></head><body><h1>Similar images in {html.escape(codes.backbone)} codes of {len(codes.ids):,}
images</h1><p>Cosine similarity of codes centred on the collection's mean; exact search.</p>{''.join(strips)}</body></html>"""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, page.encode())
    return out

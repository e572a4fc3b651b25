"""The report's interactive t-SNE map: hover a point to see its image, label and prediction. Bokeh with its
JavaScript inlined, so report.html stays one self-contained file that works offline."""
from __future__ import annotations

import numpy as np

from .page import image_uri

MAP_NAME, HOVER_NAME = "map_points", "map_hover"  # model names the page's test script looks up


def map_fragment(embedding: np.ndarray, labels: np.ndarray, predicted: np.ndarray, class_names: list[str],
                 ids: np.ndarray, images: np.ndarray) -> str:
    """HTML (Bokeh's script inlined, a div and its script) for points with images; labels/predicted index names."""
    from bokeh.embed import components
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.palettes import Category10_10, Turbo256
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    k = len(class_names)
    palette = list(Category10_10) if k <= 10 else [Turbo256[int(i * 255 / max(1, k - 1))] for i in range(k)]
    source = ColumnDataSource(name=MAP_NAME, data={
        "x": embedding[:, 0].tolist(), "y": embedding[:, 1].tolist(), "img": [image_uri(i, "JPEG") for i in images],
        "label": [class_names[i] for i in labels], "pred": [class_names[i] for i in predicted],
        "id": [str(i) for i in ids], "color": [palette[i] for i in labels],
        "mark": ["" if a == b else " (wrong)" for a, b in zip(labels, predicted)]})
    plot = figure(width=760, height=700, tools="pan,wheel_zoom,box_zoom,reset", match_aspect=True,
                  title="t-SNE map of test codes: hover a point (colour: true class)")
    plot.scatter("x", "y", source=source, color="color", size=6, alpha=0.75)
    plot.add_tools(HoverTool(name=HOVER_NAME, tooltips='<div><img src="@img" width="96" height="96" style="image-rendering:pixelated">'
                                      '<div>true <b>@label</b>, predicted <b>@pred</b>@mark</div><div>@id</div></div>'))
    plot.axis.visible = False
    plot.grid.visible = False
    script, div = components(plot)
    return INLINE.render_js() + div + script

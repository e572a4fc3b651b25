"""One HTML page per run: settings, headline numbers, every picture, the per-class table.

It only reads what the run wrote (report_data.py lists the files), so `cnncodes report RUN_DIR` is quick and
needs neither the data set nor the codes."""
from __future__ import annotations

import html
import json
import zipfile
from pathlib import Path

import numpy as np

from . import plots
from ..errors import CnnCodesError
from ..files import atomic_write
from .metrics import unknown_line
from .page import html_page
from .report_data import mistakes

PICTURES = [
    ("sample.png", "A random sample of the data"),
    ("learning_curve.png", "Learning curve (SGD) or the search of the L2 strength C (tuned head)"),
    ("tsne.png", "t-SNE map of the test codes"),
    ("tsne_thumbnails.png", "t-SNE map drawn with the images"),
    ("confusion.png", "Confusion matrix"),
    ("per_class.png", "Per-class accuracy"),
    ("mistakes.png", "Most confident mistakes"),
    ("mistake_maps.png", "Where the network saw its answer in those mistakes (class activation maps of the "
                         "predicted class: brighter is more evidence)"),
    ("data_efficiency.png", "Accuracy against training set size"),
]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CnnCodesError(f"{path} is missing or damaged ({exc}); is this a finished run directory?") from None


def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CnnCodesError(f"{path} is missing or damaged ({exc}); is this a finished run directory?") from None


def write_report(run_dir, progress: bool = True) -> Path:
    """Draw every picture from the files the run wrote, then report.html; nothing is recomputed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnCodesError(f"run directory {str(run_dir)!r} does not exist")
    settings, metrics = _read_json(run_dir / "settings.json"), _read_json(run_dir / "metrics.json")
    curve = _read_json(run_dir / "curve.json")
    thumbs = _read_npz(run_dir / "thumbnails.npz")
    picture = dict(zip(thumbs["ids"], thumbs["images"]))
    names = metrics["class_names"]
    if progress:
        print("report: drawing", flush=True)

    samples = _read_json(run_dir / "samples.json")
    plots.sample_grid({name: [picture[i] for i in ids] for name, ids in samples.items()}, run_dir / "sample.png")
    if curve["curve"]:
        plots.learning_curve(curve["curve"], run_dir / "learning_curve.png")
    elif curve["search"]:
        plots.c_search(curve["search"], curve.get("best_C"), run_dir / "learning_curve.png")
    if (run_dir / "tsne.npz").exists():
        tsne = _read_npz(run_dir / "tsne.npz")
        plots.tsne_scatter(tsne["embedding"], tsne["labels"], names, run_dir / "tsne.png")
        plots.tsne_thumbnails(thumbs["map_images"], tsne["cells"], run_dir / "tsne_thumbnails.png")
    plots.confusion_heatmap(np.array(metrics["confusion"]), names, run_dir / "confusion.png")
    plots.per_class_bars(metrics["per_class"], run_dir / "per_class.png")
    predictions = _read_npz(run_dir / "test_predictions.npz")
    ids, labels, proba = predictions["ids"], predictions["labels"], predictions["proba"]
    pred = proba.argmax(1)
    worst = mistakes(labels, proba)
    plots.mistakes_grid([picture[ids[n]] for n in worst],
                        [f"true {names[labels[n]]}\npred {names[pred[n]]} {proba[n, pred[n]] * 100:.0f}%" for n in worst],
                        run_dir / "mistakes.png")
    maps = _read_npz(run_dir / "mistake_maps.npz") if (run_dir / "mistake_maps.npz").exists() else {"ids": []}
    if len(maps["ids"]):
        shown = {i: n for n, i in enumerate(ids)}
        plots.mistakes_grid(list(maps["images"]), [f"pred {names[pred[shown[i]]]}" for i in maps["ids"]],
                            run_dir / "mistake_maps.png", title="Where the network saw its answer")
    if metrics.get("head") != "finetune" or (run_dir / "data_efficiency.json").exists():  # none for a fine-tuned run
        efficiency = _read_json(run_dir / "data_efficiency.json")
        plots.data_efficiency(efficiency["sizes"], efficiency["test_accuracy"], run_dir / "data_efficiency.png")
    return _write_html(run_dir, settings, metrics, curve, _map(run_dir, thumbs, ids, pred, names))


def _map(run_dir: Path, thumbs: dict, ids: np.ndarray, pred: np.ndarray, names: list[str]) -> str:
    """The interactive map's HTML, for the map points the run kept images of (none for runs without them)."""
    from .interactive_map import map_fragment

    if not (run_dir / "tsne.npz").exists() or not len(thumbs.get("hover_ids", [])):
        return ""
    tsne = _read_npz(run_dir / "tsne.npz")
    where = {i: n for n, i in enumerate(tsne["ids"])}
    predicted = dict(zip(ids, pred))
    rows = [where[i] for i in thumbs["hover_ids"]]
    return map_fragment(tsne["embedding"][rows], tsne["labels"][rows],
                        np.array([predicted[i] for i in thumbs["hover_ids"]]), names, thumbs["hover_ids"],
                        thumbs["hover_images"])


def _write_html(run_dir: Path, settings: dict, metrics: dict, curve: dict, interactive: str) -> Path:
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc('default' if v is None else str(v))}</td></tr>"
                   for k, v in settings.items())

    def percent(value):
        return "-" if value is None else f"{value * 100:.1f}%"

    class_rows = "".join(f"<tr><td>{esc(n)}</td><td>{percent(r['accuracy'])}</td><td>{r['images']}</td></tr>"
                         for n, r in metrics["per_class"].items())
    figures = "".join(f'<figure><img src="{f}" alt="{esc(t)}"><figcaption>{esc(t)}</figcaption></figure>'
                      for f, t in PICTURES if (run_dir / f).exists())
    if not (run_dir / "data_efficiency.png").exists():  # a fine-tuned run's (report_data.write_report_data)
        figures += ("<p>No curve of accuracy against training set size: the fine-tuned network was trained on every "
                    "training label, so heads trained on fewer labels of its features would overstate what fewer "
                    "labels give.</p>")
    t = metrics.get("timings", {})
    low_high = metrics.get("accuracy_interval_95")
    interval = (f"95% interval of the test accuracy: {low_high[0] * 100:.1f}-{low_high[1] * 100:.1f}% (Wilson). "
                if low_high else "")
    top5 = f", top-5 accuracy {percent(metrics['top5_accuracy'])}" if metrics.get("top5_accuracy") is not None else ""
    splits = ", ".join(f"{n:,} {s}" for s, n in metrics.get("split_sizes", {}).items()) + " images"
    style = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
figure{margin:1.5em 0}img{max-width:100%}.big{font-size:2em;font-weight:bold}"""
    chosen_on = str(metrics.get("chosen_on"))
    by = "lowest cross-validated log loss" if "cross-validation" in chosen_on else \
        "highest validation accuracy"
    chosen_c = "" if curve.get("best_C") is None else (  # tuned heads
        f"; C: {curve['best_C']:g}, not chosen" if chosen_on.startswith("none") else
        f"; chosen C: {curve['best_C']:g} ({by})")
    body = f"""<h1>cnncodes run: {esc(metrics['dataset'])}, {esc(metrics['backbone'])}, head {esc(str(metrics['head']))}</h1>
<p class="big">Test accuracy {metrics['accuracy'] * 100:.2f}%</p>
<p>{interval}Balanced accuracy {percent(metrics.get('balanced_accuracy'))}, macro-F1 {percent(metrics.get('macro_f1'))}{top5}.</p>
{f"<p>{esc(unknown_line(metrics['unknown']))}.</p>" if metrics.get('unknown') else ""}
{f"<p>Head: {esc(metrics['head_choice'])}.</p>" if metrics.get('head_choice') else ""}
<p>Validation accuracy {percent(metrics.get('validation_accuracy'))} (the head's settings were chosen on:
{esc(metrics.get('chosen_on', 'the validation split'))}).</p>
<p>{metrics['images']} test images; {esc(splits)};
{metrics['skipped']} files skipped (see skipped.tsv); codes {t.get('codes_seconds', '?')} s, head {t.get('head_seconds', '?')} s;
flipped codes: {'yes' if metrics.get('flip') else 'no'}{chosen_c}.</p>
<h2>Per-class accuracy</h2><table><tr><th>class</th><th>accuracy</th><th>test images</th></tr>{class_rows}</table>
{"<h2>Interactive map</h2>" + interactive if interactive else ""}
<h2>Pictures</h2>{figures}
<h2>Settings</h2><table>{rows}</table>
<script>/* records on the page how many pictures rendered: the browser test reads it */
window.addEventListener("load", () => {{
  const imgs = [...document.images];
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesShown = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const mapped = () => {{  /* the interactive map: how many points it drew, with images for the hover */
    const doc = window.Bokeh && Bokeh.documents[0];
    if (!doc) return setTimeout(mapped, 100);
    const points = doc.get_model_by_name("map_points");
    document.body.dataset.mapPoints = points ? points.data.img.filter(s => s.startsWith("data:image/")).length : 0;
    const hover = doc.get_model_by_name("map_hover");
    document.body.dataset.mapHover = hover ? ["@img", "@label", "@pred"].filter(f => hover.tooltips.includes(f)).join(",") : "";
  }};
  if (document.querySelector("div[id][data-root-id]")) mapped();
}});</script>
"""
    page = html_page(f"cnncodes run: {metrics['dataset']} / {metrics['backbone']}", body, style)
    atomic_write(run_dir / "report.html", page.encode())
    return run_dir / "report.html"

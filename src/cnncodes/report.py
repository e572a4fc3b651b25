"""One HTML page per run: settings, headline numbers, every picture, the per-class table."""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from . import plots
from .codes import Codes, atomic_write
from .errors import CnnCodesError

PICTURES = [
    ("sample.png", "A random sample of the data"),
    ("learning_curve.png", "Learning curve"),
    ("tsne.png", "t-SNE map of the test codes"),
    ("tsne_thumbnails.png", "t-SNE map drawn with the images"),
    ("confusion.png", "Confusion matrix"),
    ("per_class.png", "Per-class accuracy"),
    ("mistakes.png", "Most confident mistakes"),
    ("data_efficiency.png", "Accuracy against training set size"),
]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CnnCodesError(f"{path} is missing or damaged ({exc}); is this a finished run directory?") from None


def _reload(run_dir: Path, settings: dict, progress: bool):
    """The dataset and codes of a finished run (codes come from the cache, so this is quick)."""
    from .datasets import load_dataset
    from .extract import extract_codes

    data = None if settings["data"].startswith("CIFAR-10 (official") else settings["data"]
    dataset = load_dataset(data, cache_dir=settings.get("cache_dir"), test_percent=settings["test_percent"],
                           validation_percent=settings["validation_percent"], seed=settings["seed"])
    codes = extract_codes(dataset, settings["backbone"], cache_dir=settings.get("cache_dir"),
                          batch_size=settings["batch_size"], precision=settings["precision"], progress=progress)
    return dataset, codes


def _fine_tuned_codes(run_dir: Path, activations: Codes, progress: bool) -> Codes:
    """A fine-tuned run's codes are activation maps; its maps and curves use the fine-tuned pooled features."""
    from dataclasses import replace

    from .model_file import load_model_file

    if progress:
        print("report: pooled features of the fine-tuned blocks", flush=True)
    head, _ = load_model_file(run_dir / "model.npz")
    return replace(activations, codes=head.embed(activations.codes))


DATA_EFFICIENCY_C = 0.01  # for runs whose head chose no C (sgd, mlp): the middle of the tuned head's grid


def _data_efficiency(codes: Codes, best_c: float, seed: int):
    """Test accuracy of tuned heads trained on 100, 1,000, 10,000 and all images (fixed C: it is a curve)."""
    from .heads import SoftmaxHead

    x, y = codes.part("train", "validation")
    xt, yt = codes.part("test")
    rng = np.random.default_rng(seed)
    sizes, accs = [], []
    for size in (100, 1000, 10000, len(x)):
        if size > len(x) or (size < len(x) and size in sizes):
            continue
        pick = rng.choice(len(x), size, replace=False) if size < len(x) else np.arange(len(x))
        head = SoftmaxHead("tuned", c_grid=(best_c,)).fit(x[pick], y[pick], n_classes=len(codes.class_names))
        sizes.append(size)
        accs.append(head.score(xt, yt))
    return sizes, accs


def write_report(run_dir, dataset=None, codes: Codes | None = None, progress: bool = True) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnCodesError(f"run directory {str(run_dir)!r} does not exist")
    settings, metrics = _read_json(run_dir / "settings.json"), _read_json(run_dir / "metrics.json")
    curve = _read_json(run_dir / "curve.json")
    if dataset is None or codes is None:
        dataset, codes = _reload(run_dir, settings, progress)
    if curve.get("mode") == "finetune":
        codes = _fine_tuned_codes(run_dir, codes, progress)
    index = {item_id: i for i, item_id in enumerate(dataset.ids)}
    read = lambda item_id: dataset.read(index[item_id])  # noqa: E731
    names = codes.class_names
    rng = np.random.default_rng(settings.get("seed", 0))

    per_class = {}
    train_ids = codes.ids[codes.splits == "train"]
    train_labels = codes.labels[codes.splits == "train"]
    for k, name in enumerate(names):
        ids = train_ids[train_labels == k]
        per_class[name] = [read(i) for i in rng.choice(ids, min(8, len(ids)), replace=False)]
    plots.sample_grid(per_class, run_dir / "sample.png")

    if curve["curve"]:
        plots.learning_curve(curve["curve"], run_dir / "learning_curve.png")
    elif curve["search"]:
        plots.c_search(curve["search"], curve.get("best_C"), run_dir / "learning_curve.png")

    from .tsne import tsne_map

    if progress:
        print("report: t-SNE map of the test codes", flush=True)
    tsne_map(codes, run_dir, split="test", sample=10000, seed=settings.get("seed", 0), reader=read)

    plots.confusion_heatmap(np.array(metrics["confusion"]), names, run_dir / "confusion.png")
    plots.per_class_bars(metrics["per_class"], run_dir / "per_class.png")
    with np.load(run_dir / "test_predictions.npz", allow_pickle=False) as z:
        ids, labels, proba = z["ids"], z["labels"], z["proba"]
    pred = proba.argmax(1)
    wrong = np.flatnonzero(pred != labels)
    worst = wrong[np.argsort(-proba[wrong, pred[wrong]])][:18]
    plots.mistakes_grid([read(ids[n]) for n in worst],
                        [f"true {names[labels[n]]}\npred {names[pred[n]]} {proba[n, pred[n]] * 100:.0f}%" for n in worst],
                        run_dir / "mistakes.png")
    if progress:
        print("report: accuracy against training set size", flush=True)
    sizes, accs = _data_efficiency(codes, curve.get("best_C") or DATA_EFFICIENCY_C, settings.get("seed", 0))
    plots.data_efficiency(sizes, accs, run_dir / "data_efficiency.png")
    return _write_html(run_dir, settings, metrics, curve)


def _write_html(run_dir: Path, settings: dict, metrics: dict, curve: dict) -> Path:
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc(str(v))}</td></tr>" for k, v in settings.items())
    def percent(value):
        return "-" if value is None else f"{value * 100:.1f}%"

    class_rows = "".join(f"<tr><td>{esc(n)}</td><td>{percent(r['accuracy'])}</td><td>{r['images']}</td></tr>"
                         for n, r in metrics["per_class"].items())
    figures = "".join(f'<figure><img src="{f}" alt="{esc(t)}"><figcaption>{esc(t)}</figcaption></figure>'
                      for f, t in PICTURES if (run_dir / f).exists())
    t = metrics.get("timings", {})
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cnncodes run: {esc(metrics['dataset'])} / {esc(metrics['backbone'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
figure{{margin:1.5em 0}}img{{max-width:100%}}.big{{font-size:2em;font-weight:bold}}</style></head><body>
<h1>cnncodes run: {esc(metrics['dataset'])}, {esc(metrics['backbone'])}, head {esc(str(metrics['head']))}</h1>
<p class="big">Test accuracy {metrics['accuracy'] * 100:.2f}%</p>
<p>{metrics['images']} test images; split sizes {esc(json.dumps(metrics['split_sizes']))};
{metrics['skipped']} files skipped (see skipped.tsv); codes {t.get('codes_seconds', '?')} s, head {t.get('head_seconds', '?')} s;
flipped codes: {'yes' if metrics.get('flip') else 'no'}; chosen C: {esc(str(curve.get('best_C')))}.</p>
<h2>Per-class accuracy</h2><table><tr><th>class</th><th>accuracy</th><th>test images</th></tr>{class_rows}</table>
<h2>Pictures</h2>{figures}
<h2>Settings</h2><table>{rows}</table>
<script>/* records on the page how many pictures rendered: the browser test reads it */
window.addEventListener("load", () => {{
  const imgs = [...document.images];
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesShown = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
}});</script>
</body></html>
"""
    atomic_write(run_dir / "report.html", page.encode())
    return run_dir / "report.html"

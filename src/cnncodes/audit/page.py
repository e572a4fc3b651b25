"""An audit's findings as files a person reads: ranked CSV tables and audit.html with image galleries."""
from __future__ import annotations

import csv
import html
import io
from pathlib import Path

import numpy as np

from .issues import AuditResult, COPY_CORRELATION, SMALL
from ..files import atomic_write
from ..outputs.page import html_page, image_uri
from ..outputs.report_data import thumbnails

GALLERY = 100  # images (pairs) per gallery
THUMB = 64


def _csv(path: Path, header: list[str], rows) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, buf.getvalue().encode("utf-8", "surrogateescape"))


def write_audit(result: AuditResult, dataset, out) -> Path:
    """label_issues.csv, duplicates.csv, outliers.csv and audit.html in `out`; returns the page's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    codes, names = result.codes, result.codes.class_names
    index = dataset.row_of()

    def path(row: int) -> str:
        p = dataset.path(index[str(codes.ids[row])])
        return "" if p is None else str(p)

    suggested = result.proba.argmax(1)
    leak = set(result.leaks.tolist())
    _csv(out / "label_issues.csv", ["rank", "id", "path", "split", "given", "suggested", "label_quality",
                                     "suggested_probability"],
         ([n + 1, codes.ids[r], path(r), codes.splits[r], names[codes.labels[r]], names[suggested[r]],
           f"{result.quality[r]:.5f}", f"{result.proba[r, suggested[r]]:.5f}"] for n, r in enumerate(result.label_issues)))
    _csv(out / "duplicates.csv", ["rank", "id_a", "path_a", "split_a", "label_a", "id_b", "path_b", "split_b",
                                  "label_b", "code_similarity", "pixel_correlation", "kind", "train_test_leak"],
         ([n + 1, codes.ids[a], path(a), codes.splits[a], names[codes.labels[a]], codes.ids[b], path(b),
           codes.splits[b], names[codes.labels[b]], f"{s:.5f}", "" if np.isnan(c) else f"{c:.5f}",
           "copy" if c >= COPY_CORRELATION else "near-duplicate", "yes" if n in leak else "no"]
          for n, ((a, b), s, c) in enumerate(zip(result.pairs, result.similarity, result.correlation))))
    _csv(out / "outliers.csv", ["rank", "id", "path", "split", "label", "outlier_score"],
         ([n + 1, codes.ids[r], path(r), codes.splits[r], names[codes.labels[r]], f"{result.outlier_scores[r]:.5f}"]
          for n, r in enumerate(result.outliers)))

    leaks = result.pairs[result.leaks[:GALLERY]]
    other_rows = [n for n in range(len(result.pairs)) if n not in leak][:GALLERY]
    others = result.pairs[other_rows]
    shown = np.unique(np.concatenate([result.label_issues[:GALLERY], leaks.ravel(), others.ravel(),
                                      result.outliers[:GALLERY]]).astype(np.int64))
    pictures = dict(zip(shown.tolist(), thumbnails(dataset, [str(codes.ids[r]) for r in shown], THUMB)))

    def card(row: int, caption: str) -> str:
        return (f'<figure><img src="{image_uri(pictures[row])}" alt=""><figcaption>{html.escape(str(codes.ids[row]))}'
                f'<br>{caption}</figcaption></figure>')

    def pair_cards(pairs, sims) -> str:
        return "".join(f'<div class="pair">{card(a, codes.splits[a] + ": " + html.escape(names[codes.labels[a]]))}'
                       f'{card(b, codes.splits[b] + ": " + html.escape(names[codes.labels[b]]))}'
                       f'<span>{s:.3f}</span></div>' for (a, b), s in zip(pairs, sims))

    issues = "".join(card(r, f"given <b>{html.escape(names[codes.labels[r]])}</b>, suggested "
                             f"<b>{html.escape(names[suggested[r]])}</b><br>quality {result.quality[r]:.3f}")
                     for r in result.label_issues[:GALLERY])
    outliers = "".join(card(r, f"{html.escape(names[codes.labels[r]])}, score {result.outlier_scores[r]:.3f}")
                       for r in result.outliers[:GALLERY])
    n_test = int((codes.splits == "test").sum())
    leaked_test = len({int(r) for r in result.pairs[result.leaks].ravel() if codes.splits[r] == "test"})
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    small = int((codes.splits != "test").sum()) < SMALL
    probe_how = " on the full codes, chosen by cross-validation (a small collection)" if small else \
        " on the codes' principal components"
    weak, unchecked = result.weak_suggestions(), result.unchecked()
    warning = (f'<p class="warn">Weak suggestions: {html.escape(weak)}.</p>' if weak else "") + (
        f'<p class="warn">Not checked: {html.escape(unchecked)}.</p>' if unchecked else "")
    style = """.warn{background:#fff3cd;padding:.5em} body{font-family:sans-serif;margin:2em;max-width:1400px} figure{display:inline-block;margin:4px;width:150px;
font-size:11px;vertical-align:top} figcaption{overflow-wrap:anywhere} img{width:96px;height:96px;image-rendering:pixelated}
.pair{display:inline-block;border:1px solid #ccc;margin:4px;padding:2px} .pair span{font-size:12px}"""
    body = f"""<h1>Audit of {html.escape(codes.backbone)} codes: {len(codes.ids):,} images</h1>
<p>{len(result.label_issues):,} likely label errors; {len(result.pairs):,} near-duplicate pairs (cosine of centred
codes at least the threshold, or copies: code neighbours whose small grey thumbnails correlate at
{COPY_CORRELATION} or more), of which {len(result.leaks):,} join a test image to a training image
({leaked_test:,} of the {n_test:,} test images have a near-duplicate outside the test split); the {len(result.outliers):,} most atypical images.
Full ranked lists: label_issues.csv, duplicates.csv, outliers.csv. Time: {timing}. Label errors come from
out-of-fold probabilities of a softmax probe with L2 strength C = {result.probe_c:g}{probe_how}; its suggestion
agrees with the given label on {result.probe_accuracy:.1%} of the train and validation images.</p>
<h2>Likely label errors (most likely first)</h2>{warning}{issues or "<p>none</p>"}
<h2>Train/test near-duplicates (leaks)</h2>{pair_cards(leaks, result.similarity[result.leaks[:GALLERY]]) or "<p>none</p>"}
<h2>Other near-duplicates</h2>{pair_cards(others, result.similarity[other_rows]) or "<p>none</p>"}
<h2>Outliers (most atypical first)</h2>{outliers}"""
    atomic_write(out / "audit.html", html_page("cnncodes audit", body, style).encode())
    return out / "audit.html"

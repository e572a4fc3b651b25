"""Why a model decided: class activation maps (Zhou et al., CVPR 2016).

With an EfficientNet-Lite backbone the code is the mean of the last feature map over its positions, and a linear head
on plain codes is linear in it, so class k's logit is the mean over positions of w_k . standardised(feature) plus the
bias. The map of those per-position terms is therefore exact: it is what the decision adds up, not an estimate. A
fine-tuned network (--finetune) ends the same way, its own last feature map averaged into a linear classifier, so its
maps are exact too. The map comes from the fp32 network (torch), whatever runtime computed the model's codes."""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .backbones import get_backbone, load_model
from .data.images import BadImage, item_reader
from .errors import CnnCodesError

if TYPE_CHECKING:
    from PIL import Image

LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
SUPPORTED = ("an EfficientNet-Lite backbone (efficientnet_lite0, _lite1 or _lite2, without options, not joined with +) "
             "and a linear head (tuned or sgd) trained on plain codes (no --normalize), or such a backbone fine-tuned "
             "(--finetune)")
DISPLAY_SIDE = 448  # the longer side of a written heatmap


def unexplainable(backbone: str, head) -> str | None:
    """Why a model's decisions have no exact activation map, or None when they have one."""
    import re

    base, _, options = backbone.partition(":")
    mode = getattr(head, "mode", "?")
    if base not in LITE or (options and not (mode == "finetune" and re.fullmatch(r"cut=\d+", options))):
        return f"activation maps need {SUPPORTED}; this model's backbone is {backbone!r}"
    if mode == "finetune":
        return None
    if mode not in ("tuned", "sgd") or head.normalize != "none":
        return (f"activation maps need {SUPPORTED}; this model's head is {mode!r}"
                + (f" with --normalize {head.normalize}" if head.normalize != "none" else ""))
    return None


class Explainer:
    """Activation maps of one model: maps(rgb) gives (positions x classes terms, logits)."""

    def __init__(self, backbone: str, head):
        reason = unexplainable(backbone, head)
        if reason:
            raise CnnCodesError(reason)
        self.spec, self.head, self.model = get_backbone(backbone), head, load_model(backbone)

    @classmethod
    def of(cls, predictor) -> "Explainer":
        """The explainer of a loaded Predictor (a run's model.npz; an exported ONNX file keeps no feature map)."""
        if predictor.head is None:
            raise CnnCodesError(f"activation maps need the run folder or its model.npz, not the exported "
                                f"{predictor.path.name}: the ONNX file ends at the probabilities")
        return cls(predictor.backbone, predictor.head)

    def maps(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H', W', K) per-position logit terms over the network's input window, and the (K,) logits they add up to."""
        import torch

        x = torch.from_numpy(self.spec.preprocess(rgb)[None])
        with torch.no_grad():  # the last feature map: of the backbone, or of the fine-tuned top over the trunk's
            last = self.model.features(x) if self.spec.cut is None else self.head.top_map(self.model.trunk(x))
        features = last[0].float().numpy()  # (C, H', W')
        terms, bias = self.head.position_terms(features.reshape(len(features), -1).T)  # (H'W', K), (K,)
        terms = terms.reshape(*features.shape[1:], -1)
        return terms, terms.mean((0, 1)) + bias

    def overlay(self, rgb: np.ndarray, class_index: int | None = None) -> tuple["Image.Image", int]:
        """The photo with class_index's map over the part the network saw (the top class when None), and that class.

        Brighter is more evidence for the class; the map spans its own minimum to maximum, and a centre crop's
        margins, which the network never saw, are left dim."""
        from matplotlib import colormaps
        from PIL import Image

        terms, logits = self.maps(rgb)
        k = int(np.argmax(logits)) if class_index is None else int(class_index)
        heat = terms[..., k]
        heat = (heat - heat.min()) / (np.ptp(heat) + 1e-12)
        h, w = rgb.shape[:2]
        scale = DISPLAY_SIDE / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        photo = Image.fromarray(rgb).resize(size, Image.BICUBIC)
        top, left, bottom, right = self._seen_box(h, w, scale)
        bottom, right = max(bottom, top + 1), max(right, left + 1)  # a sliver of a panorama is still one pixel
        grid = Image.fromarray(heat.astype(np.float32), mode="F").resize((right - left, bottom - top), Image.BILINEAR)
        colour = (colormaps["inferno"](np.clip(np.asarray(grid), 0, 1))[..., :3] * 255).astype(np.uint8)
        out = np.asarray(photo).astype(np.float32) * 0.35
        seen = np.asarray(photo)[top:bottom, left:right].astype(np.float32)
        out[top:bottom, left:right] = 0.45 * seen + 0.55 * colour
        return Image.fromarray(out.round().astype(np.uint8)), k

    def _seen_box(self, h: int, w: int, scale: float) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of the network's input window, in the displayed photo's pixels."""
        rh, rw, top, left = self.spec.preprocess.geometry(h, w)
        size = self.spec.preprocess.size
        sy, sx = h / rh * scale, w / rw * scale
        return round(top * sy), round(left * sx), round((top + size) * sy), round((left + size) * sx)


def write_explanations(explainer: Explainer, images: Sequence, class_names: list[str], out_dir,
                       predicted: Sequence[str | None] | None = None, unknown: Sequence[bool] | None = None) -> list:
    """For each image: the path of its heatmap JPEG in out_dir (named after the image and the class mapped), or the
    reason it was skipped. predicted: each image's predicted class name, mapped so the picture matches the answer
    (a model whose codes come from int8 or bf16 may rank a close second class first); default the map's own top
    class. unknown: which images were answered unknown (their map shows the nearest class, and says so in its name:
    x.unknown-nearest-dog.jpg). Names stay unique when several images share a file name; out_dir/heatmaps.csv says
    which heatmap is whose."""
    import csv
    import io

    from .files import atomic_write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    read, used, results = item_reader(images), set(), []
    index = io.StringIO()
    rows = csv.writer(index)
    rows.writerow(["image", "heatmap", "class_mapped", "unknown", "error"])
    for n, item in enumerate(images):
        wanted = predicted[n] if predicted is not None else None
        named = str(item) if isinstance(item, (str, Path)) else f"image{n}"
        try:
            picture, k = explainer.overlay(read(n), None if wanted is None else class_names.index(wanted))
        except (BadImage, OSError) as exc:
            why = str(exc) if isinstance(exc, BadImage) else f"cannot read: {exc.strerror or exc}"
            results.append(why)
            rows.writerow([named, "", "", "", why])
            continue
        away = unknown is not None and bool(unknown[n])
        mapped = ("unknown-nearest-" if away else "") + _safe(class_names[k])
        stem, copy = Path(named).stem, 1
        name = f"{stem}.{mapped}.jpg"
        while name.lower() in used:  # lower: a file system may not tell A.jpg from a.jpg
            copy += 1
            name = f"{stem}.{copy}.{mapped}.jpg"
        used.add(name.lower())
        picture.save(out_dir / name, quality=90)
        results.append(out_dir / name)
        rows.writerow([named, name, class_names[k], int(away), ""])
    atomic_write(out_dir / "heatmaps.csv", index.getvalue().encode())
    return results


def write_mistake_maps(out, dataset, head, backbone: str, test_ids, labels, proba) -> bool:
    """mistake_maps.npz in a run folder: the map of the predicted class over each mistake the report shows, so the
    report can draw them without the network. False (nothing written) for a model without exact maps."""
    from .files import atomic_write, npz_bytes
    from .outputs.report_data import PICTURE, mistakes

    if unexplainable(backbone, head):
        return False
    explainer, row = Explainer(backbone, head), dataset.row_of()
    shown, pictures = [], []
    for n in mistakes(labels, proba):
        try:
            pictures.append(explainer.overlay(dataset.read(row[test_ids[n]]), int(proba[n].argmax()))[0])
            shown.append(n)
        except (BadImage, OSError):  # changed or unreadable since its codes were made: left out of the picture
            continue
    worst = shown
    side = 2 * PICTURE
    atomic_write(Path(out) / "mistake_maps.npz", npz_bytes(
        ids=np.array([str(test_ids[n]) for n in worst], dtype=str),
        images=np.stack([np.asarray(p.resize((side, side))) for p in pictures]) if pictures
        else np.zeros((0, side, side, 3), np.uint8)))
    return True


def heatmap_jpeg(explainer: Explainer, rgb: np.ndarray, class_index: int | None = None) -> bytes:
    """One heatmap as JPEG bytes (what the server returns): of class_index, default the map's own top class."""
    picture, _ = explainer.overlay(rgb, class_index)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60] or "class"

"""'None of these' on CIFAR-10: a head trained on 6 classes tells the other 4 classes' test images from the known 6.

    cnncodes extract --data ../shared/data/cifar-10-python.tar.gz --runtime onnx --out CODES
    python benchmarks/open_set.py --codes CODES/codes.npz [--codes-name NAME] [--far ../shared/data/imagenet-sample
        (--runtime onnx | --data ../shared/data/cifar-10-python.tar.gz)] [--subspaces 0.8,0.9,0.99,1]
        [--references 2500,10000] [--json results/open_set.json]
    python benchmarks/open_set.py --data ../shared/data/cifar-10-python.tar.gz --finetune 1 [--epochs 4]
        [--runtime onnx-int8] [--cache-dir CACHE] [--json results/open_set_ft.json]

The 6/4 splits are the 5 standard CIFAR-10 splits of the open-set literature (known classes; osr_splits.py of
Vaze et al., ICLR 2022, whose maximum logit score reaches an AUROC of about 0.936 with a network trained on CIFAR-10).
Per split: the tuned head (C chosen on validation) on the known classes' train split, the detector calibrated on their
validation split (heads/unknown.py); AUROC of each score on the validation split (known classes' images against the
unknown classes' images there, which nothing was trained on: the default is the best by this figure), and on the
10,000 test images: closed-set accuracy, AUROC of each score (known vs unknown), the share of unknowns accepted
when 95% of the known test images are kept (FPR95, the oracle threshold), and with the model's own threshold (set on
validation) the shares of known kept and unknown accepted. --subspaces, --references: the default's score also with
other settings of its detector (the share of directions kept, the number of reference codes), each calibrated as
the default's.
--far: the same for a head on all 10 classes against photos of another kind (the ImageNet sample), their codes by the
same backbone with --runtime (the codes' runtime; default onnx-int8, whose graphs --data calibrated).
--finetune K: instead of a tuned head on codes, Lite0's last K blocks fine-tuned per split on their cached activation
maps (computed or read from the cache as `cnncodes run --finetune K` does), its detector (the fine-tuned logits beside
the pretrained network's codes) calibrated on the known classes' validation images, as such a run calibrates it; the
distance scores (neighbour, Mahalanobis) are measured on those codes, and the default's sum is also measured with
distances between the fine-tuned pooled features instead.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnncodes.codes.runtime import resolve_runtime  # noqa: E402
from cnncodes.codes.view import Codes  # noqa: E402
from cnncodes.heads import SoftmaxHead  # noqa: E402
from cnncodes.heads.finetune import EPOCHS, FineTuneHead  # noqa: E402
from cnncodes.heads.unknown import NEIGHBOUR, UnknownDetector  # noqa: E402

SPLITS = [[0, 6, 4, 9, 1, 7], [7, 6, 4, 9, 0, 1], [1, 5, 7, 3, 9, 4], [8, 6, 1, 9, 0, 7], [2, 4, 1, 7, 9, 6]]


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(len(known)), np.ones(len(unknown))], np.r_[known, unknown]))


def fpr_at_95(known: np.ndarray, unknown: np.ndarray) -> float:
    return float((unknown <= np.quantile(known, 0.95)).mean())


def other_scores(x_train, y_train, queries, logits) -> dict:
    """The scores the default was chosen over, beside its two parts: probability, energy, Mahalanobis distances."""
    from scipy.special import logsumexp

    p = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    scores = {"max probability": -p.max(1), "energy": -logsumexp(logits, axis=1)}
    x = np.asarray(x_train, np.float64)
    classes = np.unique(y_train)
    means = np.stack([x[y_train == k].mean(0) for k in classes])
    centred = x - means[np.searchsorted(classes, y_train)]
    shared = np.linalg.inv(centred.T @ centred / len(x) + 1e-3 * np.eye(x.shape[1]))
    background = np.linalg.inv(np.cov(x.T) + 1e-3 * np.eye(x.shape[1]))
    q = np.asarray(queries, np.float64)
    to_class = squared_mahalanobis(q, means, shared)
    to_all = squared_mahalanobis(q, x.mean(0, keepdims=True), background)[:, 0]
    scores["Mahalanobis"] = to_class.min(1)
    scores["relative Mahalanobis"] = (to_class - to_all[:, None]).min(1)
    return scores


def squared_mahalanobis(q: np.ndarray, centres: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(N, C): (q - c) P (q - c) for each row q and centre c, as q P q - 2 q P c + c P c: one N x D x D product for
    all centres (for 6,592-d codes, a seventh of the time of one per centre)."""
    to_centres = centres @ precision
    return ((q @ precision) * q).sum(1, keepdims=True) - 2 * q @ to_centres.T + (to_centres * centres).sum(1)


class FineTunedFeatures:
    """A fine-tuned head whose detector measures distances between its own pooled features, not the pretrained
    network's codes (FineTuneHead.detector_features): the alternative the default was chosen over."""

    def __init__(self, head: FineTuneHead):
        self.head = head

    def detector_features(self, x) -> np.ndarray:
        return self.head.embed(x)

    def detector_inputs(self, x) -> tuple[np.ndarray, np.ndarray]:
        pooled = self.head.embed(x)
        return pooled, self.head._classify(pooled)


def one_split(codes: Codes, known: list[int], seed: int, epochs: int | None = None, subspaces=(),
              references=()) -> dict:
    """epochs: fine-tune (codes of a cut backbone) for at most that many epochs instead of the tuned head.
    subspaces: the default's score also with its distances measured in directions holding these shares of the
    reference codes' squared length (1: every direction); references: also with at most these many training codes
    as the reference; each detector calibrated as the default's."""
    # activation maps stay in their stored precision (float16: half the memory); the fine-tuned head reads them so
    x, y, s = np.asarray(codes.vectors, None if epochs else np.float32), codes.labels, codes.splits
    is_known = np.isin(y, known)
    relabel = np.full(10, -1)
    relabel[known] = np.arange(len(known))
    train, val, test = (s == "train") & is_known, (s == "validation") & is_known, s == "test"
    t0 = time.perf_counter()
    if epochs is None:
        head = SoftmaxHead("tuned", seed=seed).fit(x[train], relabel[y[train]], x[val], relabel[y[val]])
    else:
        head = FineTuneHead(codes.backbone, epochs=epochs, seed=seed).fit(x[train], relabel[y[train]], x[val],
                                                                         relabel[y[val]], n_classes=len(known))

    def calibrated(scored, **options) -> UnknownDetector:
        """A detector for `scored` on the known classes, calibrated as a run calibrates its own (a fine-tuned head
        never trained on its validation images: pipeline.fit_unknown)."""
        return UnknownDetector.fit(scored, x[train], relabel[y[train]], x[val], relabel[y[val]], seed=seed,
                                   validation_unseen=epochs is not None, **options)

    detector = calibrated(head)
    if epochs is not None:
        own = FineTunedFeatures(head)
        own_detector = calibrated(own)
    variants = {f"default, directions holding {share:g}": calibrated(head, subspace=share) for share in subspaces}
    variants |= {f"default, reference of at most {count:,} codes": calibrated(head, reference_max=count)
                 for count in references}
    train_features = head.detector_features(x[train])

    def all_scores(rows):
        features, logits = head.detector_inputs(x[rows])
        parts = detector.parts(features, logits)
        z = (parts - detector.center) / detector.spread
        scores = {"default (max logit + neighbour)": detector.score(features, logits),
                  "max logit + neighbour, no cut": z.sum(1), "max logit": parts[:, 0],
                  f"{NEIGHBOUR}th neighbour": parts[:, 1]}
        scores |= {name: variant.score(features, logits) for name, variant in variants.items()}
        if epochs:
            tuned = own.detector_features(x[rows])
            scores |= {"max logit + neighbour among the fine-tuned features": own_detector.score(tuned, logits),
                       f"{NEIGHBOUR}th neighbour among the fine-tuned features":
                       own_detector.parts(tuned, logits)[:, 1]}
        return logits, scores | other_scores(train_features, relabel[y[train]], features, logits)

    # validation: the known classes' validation images against the unknown classes' validation images, which no
    # head or detector saw; what the default was chosen on
    checked = s == "validation"
    _, val_scores = all_scores(checked)
    val_known = is_known[checked]
    logits, scores = all_scores(test)
    test_known = is_known[test]
    default = scores["default (max logit + neighbour)"]
    return {
        "known_classes": [codes.class_names[k] for k in known],
        "closed_set_accuracy": float((logits[test_known].argmax(1) == relabel[y[test][test_known]]).mean()),
        "validation_auroc": {name: auroc(v[val_known], v[~val_known]) for name, v in val_scores.items()},
        "auroc": {name: auroc(v[test_known], v[~test_known]) for name, v in scores.items()},
        "fpr95": {name: fpr_at_95(v[test_known], v[~test_known]) for name, v in scores.items()},
        "own_threshold": {"known_kept": float((default[test_known] <= detector.threshold).mean()),
                          "unknown_accepted": float((default[~test_known] <= detector.threshold).mean())},
        "seconds": round(time.perf_counter() - t0, 1)}


def far_shift(codes: Codes, folder: Path, runtime: str, cache_dir: str | None, data: str | None) -> dict:
    """All 10 classes against the photos in `folder` (their codes by the same backbone, with `runtime`: the one the
    archive's codes were extracted with)."""
    from cnncodes.codes.extract import codes_graphs, image_codes
    from cnncodes.predict import list_images
    from cnncodes.settings import RunSettings

    backbone = codes.backbone
    settings = RunSettings(backbone=backbone, runtime=runtime, cache_dir=cache_dir, head="tuned",
                           **({"data": data} if data else {}))
    photos, _ = image_codes(backbone, list_images([folder]), graphs=codes_graphs(settings), precision="fp32")
    x, y, s = np.asarray(codes.vectors, np.float32), codes.labels, codes.splits
    head = SoftmaxHead("tuned").fit(x[s == "train"], y[s == "train"], x[s == "validation"], y[s == "validation"])
    detector = UnknownDetector.fit(head, x[s == "train"], y[s == "train"], x[s == "validation"], y[s == "validation"])
    known = detector.score(x[s == "test"], head.decision_function(x[s == "test"]))
    far = detector.score(photos, head.decision_function(photos))
    return {"photos": len(photos), "auroc": auroc(known, far), "fpr95": fpr_at_95(known, far),
            "known_kept": float((known <= detector.threshold).mean()),
            "photos_accepted": float((far <= detector.threshold).mean())}


def counts(text: str) -> list[int]:
    """--references: positive whole numbers separated by commas (no thousands separators)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not whole numbers separated by commas: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"give counts of at least 1 (got {text!r})")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codes", help="codes.npz of the official archive (cnncodes extract)")
    parser.add_argument("--data", help="the official archive: for --finetune, and for --far with int8 codes (their "
                        "graphs were calibrated on its images)")
    parser.add_argument("--finetune", type=int, default=None, metavar="K", help="with --data: fine-tune Lite0's "
                        "last K blocks per split")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="--finetune: its schedule's length")
    parser.add_argument("--runtime", default="onnx-int8", help="--far: the runtime the codes were extracted with "
                        "(codes.npz does not record it: a wrong one codes the photos otherwise); --finetune: the "
                        "runtime of the activation maps")
    parser.add_argument("--codes-name", default=None, help="name in the results (default: the backbone)")
    parser.add_argument("--far", default=None, help="a folder of photos of another kind (the ImageNet sample)")
    parser.add_argument("--cache-dir", default=None, help="the cache the codes were extracted with (for --far), or "
                        "where --finetune's activation maps are")
    parser.add_argument("--subspaces", type=lambda text: [float(v) for v in text.split(",") if v], default=[],
                        help="also the default with its distances in the directions holding these shares of the "
                        "reference's squared length, e.g. 0.8,0.9,0.99,1 (the default: heads/unknown.py SUBSPACE)")
    parser.add_argument("--references", type=counts, default=[],
                        help="also the default with at most these many training codes as its reference, e.g. "
                        "5000,10000 (the default: heads/unknown.py REFERENCE_MAX)")
    parser.add_argument("--json", default=None)
    a = parser.parse_args()
    if a.finetune is not None and (a.data is None or a.codes or a.far):
        parser.error("--finetune K goes with --data, without --codes or --far")
    if a.finetune is None and a.codes is None:
        parser.error("give --codes (or --data with --finetune K)")
    if a.codes and a.data and not a.far:
        parser.error("--data goes with --far (int8 codes) or --finetune K")
    if a.far and resolve_runtime(a.runtime) == "onnx-int8" and a.data is None:
        parser.error("--far with int8 codes needs --data: the archive their int8 graphs were calibrated on")
    if a.finetune is not None:
        from cnncodes.codes.extract import extract_codes
        from cnncodes.data.datasets import load_dataset

        dataset = load_dataset(a.data, cache_dir=a.cache_dir)
        codes = extract_codes(dataset, f"efficientnet_lite0:cut={a.finetune}", cache_dir=a.cache_dir,
                              runtime=a.runtime, progress=False)
    else:
        codes = Codes.load(a.codes)
    name = a.codes_name or codes.backbone
    if a.finetune is not None:
        name += f", fine-tuned (at most {a.epochs} epochs)"
    # the far shift first: a wrong path or setting fails before the splits' minutes
    far = far_shift(codes, Path(a.far), a.runtime, a.cache_dir, a.data) if a.far else None
    splits = []
    for n, known in enumerate(SPLITS):
        splits.append(one_split(codes, known, seed=n, epochs=None if a.finetune is None else a.epochs,
                                subspaces=a.subspaces, references=a.references))
        print(json.dumps(splits[-1]), flush=True)
    names = list(splits[0]["auroc"])
    summary = {score: {"validation_auroc_mean": float(np.mean([r["validation_auroc"][score] for r in splits])),
                       "auroc_mean": float(np.mean([r["auroc"][score] for r in splits])),
                       "auroc_range": [min(r["auroc"][score] for r in splits), max(r["auroc"][score] for r in splits)],
                       "fpr95_mean": float(np.mean([r["fpr95"][score] for r in splits]))} for score in names}
    result = {"codes": name, "splits": splits, "summary": summary,
              "closed_set_accuracy_mean": float(np.mean([r["closed_set_accuracy"] for r in splits]))}
    if far is not None:
        result["far_shift"] = far
    print(f"\n{name}: closed-set accuracy {result['closed_set_accuracy_mean']:.4f}")
    print("| score | validation AUROC, mean of 5 | test AUROC, mean of 5 | range | unknowns accepted at 95% known "
          "kept (test) |\n|---|---|---|---|---|")
    for score, r in sorted(summary.items(), key=lambda kv: -kv[1]["validation_auroc_mean"]):
        print(f"| {score} | {r['validation_auroc_mean']:.4f} | {r['auroc_mean']:.4f} | {r['auroc_range'][0]:.3f}-"
              f"{r['auroc_range'][1]:.3f} | {r['fpr95_mean'] * 100:.1f}% |")
    own = [r["own_threshold"] for r in splits]
    print(f"own threshold (validation, keep 95%): known kept {np.mean([o['known_kept'] for o in own]) * 100:.1f}%, "
          f"unknown accepted {np.mean([o['unknown_accepted'] for o in own]) * 100:.1f}%")
    if a.far:
        print("far shift:", json.dumps(result["far_shift"]))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

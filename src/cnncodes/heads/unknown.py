"""'None of these': how unlike the training images an image is, from its code and the head's logits.

The score adds two parts, each standardised on the calibration images (median 0, standard deviation 1):
minus the largest logit (the maximum logit score of Vaze et al., ICLR 2022), counted only above its median, and
the cosine distance to the 10th nearest training code (Sun et al., ICML 2022). An image is unknown when its score is
above the calibration scores' `keep` quantile: 95% of known images are kept by default. The sum was chosen over
either part alone, the maximum probability, energy and (relative) Mahalanobis distances by
`benchmarks/open_set.py` (docs/benchmarks.md). The logit part is cut at its median because a linear head's logits
grow without bound away from the data: an image far from every training code can get the largest logit of all,
and only the neighbour distance then tells (on CIFAR-10's 6/4 splits the cut costs 0.001 of AUROC). Similarities
to the training codes are measured within their principal directions (principal_directions): fewer dimensions than
the codes have, so comparing a few images with the training codes takes two thirds of the time (10,000 codes),
at the same AUROC (docs/benchmarks.md).

Calibration: with at least SMALL_VALIDATION validation images, the validation split (the neighbour search never sees
it; the head's refit on train + validation barely moves the threshold there: 94.5-94.8% of CIFAR-10's known test
images kept for a 95% target). A smaller collection is calibrated on all its labelled images, cross-fitted: logits
from heads trained on the other folds, neighbours searched with the image's own code left out; otherwise the logits
of images the head was trained on would look surer than those of new images (`benchmarks/unknown_small.py`, 60
photos of each of 3 CIFAR-10 classes: calibrated on its 30 validation photos, 37% of the known test photos are called
unknown; cross-fitted, 4.7%). A fine-tuned head (--finetune) measures distances between the pretrained network's
codes (FineTuneHead.detector_features), and never trains on its validation images (it only chooses its epoch on
them): they calibrate it from UNSEEN_CALIBRATION images on (with fewer, the run has no detector and says so).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .base import fold_count, in_shared_class, unit_rows
from ..errors import CnnCodesError
from .softmax import SMALL_VALIDATION

NEIGHBOUR = 10  # the distance to the 10th nearest training code
# training codes kept in the model (a seeded draw, stratified by class, when there are more). benchmarks/open_set.py
# --references (docs/benchmarks.md): on CIFAR-10's validation splits 2,500, 5,000 and 10,000 score alike (AUROC
# 0.9488, 0.9490, 0.9485; the splits' own differences between 2,500 and 5,000 run from -0.0015 to +0.0018), and the
# fewest cost least: a server's call of one image reads the whole reference (benchmarks/predict_calls.py)
REFERENCE_MAX = 2_500
KEEP = 0.95
UNSEEN_CALIBRATION = 20  # validation images a fine-tuned head's detector needs: its 95% quantile from fewer is a guess
CHUNK = 2048
FEW_ROWS = 64  # fewer images a call are compared with the reference by few_rows_product (parts)
# the share of the reference codes' squared length held by the directions their similarities are measured in
# (principal_directions). benchmarks/open_set.py --subspaces (docs/benchmarks.md): on CIFAR-10's validation splits
# 0.95 scores as every direction does (AUROC 0.9485 against 0.9484) with under half of them; 0.8 scored 0.9494, but
# kept 2 directions for the 3 classes of the first collection of tests/test_unknown.py, losing one class
SUBSPACE = 0.95


def _reference_rows(y: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """About `limit` rows: each class keeps its share, rounded (and at least one row)."""
    if len(y) <= limit:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    picked = [rng.choice(rows, max(1, round(limit * len(rows) / len(y))), replace=False)
              for rows in (np.flatnonzero(y == k) for k in np.unique(y))]
    return np.sort(np.concatenate(picked))


def principal_directions(unit: np.ndarray, subspace: float = SUBSPACE) -> np.ndarray:
    """(D, d): the fewest top right singular vectors of `unit` (rows of length 1, not centred) holding `subspace` of
    their squared length. An image's similarity to a reference code is then the dot product of their projections
    onto these d directions: the cosine less its part in the dropped directions, where codes differ by noise more
    than by what they show. With d below D (455 of 1,280 for 2,500 of Lite0's codes of CIFAR-10's training images) the
    comparison with every reference code costs less. From the eigenvectors of the smaller Gram matrix (R x R or
    D x D): for the 6,592-d codes of the best preset, no decomposition of the whole 2,500 x 6,592 matrix."""
    if not 0 < subspace <= 1:
        raise CnnCodesError(f"the share of the codes' squared length to keep must be in (0, 1] (got {subspace})")
    unit = np.asarray(unit, np.float32)
    wide = unit.shape[0] < unit.shape[1]
    values, vectors = np.linalg.eigh((unit @ unit.T if wide else unit.T @ unit).astype(np.float64))
    values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]  # largest first
    held = np.cumsum(values)
    count = min(int(np.searchsorted(held, subspace * held[-1])) + 1, len(values))
    top = vectors[:, :count]
    if wide:  # the right singular vectors from the left ones: v = unit^T u / sigma
        top = (unit.T @ top.astype(np.float32)) / np.sqrt(np.maximum(values[:count], 1e-12))  # no D x R copy
    return np.ascontiguousarray(top, dtype=np.float32)


def _cross_fitted_logits(head, fold_head, x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Each image's logits from a head that did not see it (stratified folds); the head's own where no class has 2
    images or no fold_head is given."""
    import warnings

    from sklearn.model_selection import StratifiedKFold

    shared = in_shared_class(y)  # a class of one image must not switch cross-fitting off: its image joins one fold
    folds = fold_count(y[shared]) if shared.any() else 1
    if fold_head is None or folds < 2:
        return head.decision_function(x)
    logits = np.zeros((len(x), head.n_classes_), np.float32)
    with warnings.catch_warnings():  # "the least populated class has only 1 member": as meant, see above
        warnings.simplefilter("ignore", UserWarning)
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    for fit_rows, held in splits:
        logits[held] = fold_head(x[fit_rows], y[fit_rows]).decision_function(x[held])
    return logits


@dataclass
class UnknownDetector:
    reference: np.ndarray  # (R, d) float16: unit-length detector features of training images (Head.detector_features),
    # projected onto `projection` (shorter than 1 by their part in the dropped directions)
    center: np.ndarray  # (2,) medians of the two parts over the calibration images
    spread: np.ndarray  # (2,) their standard deviations
    threshold: float  # scores above it are unknown
    keep: float  # the share of calibration images the threshold keeps
    neighbour: int = NEIGHBOUR  # k of the k-th nearest row: at most a typical class's rows in the reference
    calibrated_on: int = 0  # images the threshold was set on (0: not known, a detector read from a model file)
    # (D, d) float32: the reference's principal directions (principal_directions); None: every direction (a model
    # file written before them, or a reference too small for fewer directions to cost less)
    projection: np.ndarray | None = None
    # ONNX Runtime's product for a few images a call (prepare_few_rows, a server); None: NumPy's
    few_rows_product: object = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def fit(cls, head, x_train, y_train, x_val=None, y_val=None, *, fold_head=None, keep: float = KEEP,
            seed: int = 0, validation_unseen: bool = False, seen=None, subspace: float = SUBSPACE,
            reference_max: int = REFERENCE_MAX) -> "UnknownDetector":
        """head: the trained head; x_train, y_train (and x_val, y_val): the codes and labels it was trained beside;
        fold_head(x, y): a head of the same kind and settings trained on x, y (for a small collection's
        cross-fitted calibration; without it, the head's own logits are used). Distances are measured between the
        head's detector features (Head.detector_features: the codes, or a fine-tuned network's pooled features).
        validation_unseen: the head never trained on the validation images (a fine-tuned one only chose its epoch
        on them), so a validation split smaller than SMALL_VALIDATION calibrates it too. seen: what fitting the head
        computed already (finetune.Seen: detector features of x_train's rows, those and the logits of x_val's), read
        instead of computed again. subspace: see principal_directions. reference_max: about how many training codes the
        reference keeps (_reference_rows)."""
        from ..codes.matrix import vstack

        if not 0 < keep < 1:
            raise CnnCodesError(f"the share of known images to keep must be between 0 and 1 (got {keep})")
        if reference_max < 1:
            raise CnnCodesError(f"the reference must keep at least one training code (got {reference_max})")
        small = x_val is None or len(x_val) == 0 or (len(x_val) < SMALL_VALIDATION and not validation_unseen)
        if small:
            seen = None  # calibration cross-fits on the training rows (and validation's, joined below)
        if small and x_val is not None and len(x_val):
            x_train, y_train = vstack(x_train, x_val), np.concatenate([y_train, y_val])
        y_train = np.asarray(y_train)
        rows = _reference_rows(y_train, reference_max, seed)
        if seen is None:
            x_reference = np.asarray(x_train[rows] if len(rows) < len(y_train) else x_train)
            features = head.detector_features(x_reference)
        else:  # (not small: no cross-fitting below needs the reference codes)
            if len(seen.train_codes) < len(y_train) or len(seen.validation_logits) != len(x_val):
                raise CnnCodesError("`seen` does not come from fitting this head on these rows")
            features = np.asarray(seen.train_codes[rows], np.float32)
        unit = unit_rows(features)
        # every direction where calibration reads the reference's own images (a small collection): directions fitted
        # to them would hold more of their codes than of a new image's, and make new images look unlike the known
        projection = None if small else principal_directions(unit, subspace)
        if projection is not None and projection.shape[1] * sum(unit.shape) >= unit.size:  # it would cost more
            projection = None
        reference = (unit if projection is None else unit @ projection).astype(np.float16)
        # k: at most a typical class's rows (the median class: one mislabelled image making a class of its own must
        # not shrink every image's neighbourhood to one code); - 1: calibration may leave an image's own code out
        typical = int(np.median([int(n) for n in np.bincount(y_train[rows]) if n] or [1]))
        detector = cls(reference, np.zeros(2, np.float32), np.ones(2, np.float32), np.inf, keep,
                       max(1, min(NEIGHBOUR, typical - 1)), projection=projection)
        if not small:
            inputs = head.detector_inputs(x_val) if seen is None else (seen.validation_codes, seen.validation_logits)
            parts = detector.parts(*inputs)
        else:
            logits = _cross_fitted_logits(head, fold_head, x_reference, y_train[rows], seed)
            parts = detector.parts(features, logits, skip_self=True)
        detector.center = np.median(parts, 0).astype(np.float32)
        detector.spread = (parts.std(0) + 1e-6).astype(np.float32)
        detector.threshold = float(np.quantile(detector._combine(parts), keep))
        detector.calibrated_on = len(parts)
        return detector

    def parts(self, features, logits: np.ndarray, skip_self: bool = False) -> np.ndarray:
        """(N, 2): minus the largest logit, and the cosine distance to the k-th nearest reference row (within the
        reference's principal directions). skip_self: row i of `features` is reference row i, not its own
        neighbour (calibration on the training images; masked, since a projected code need not be its own
        nearest)."""
        skip = skip_self and len(self.reference) > 1
        k = min(self.neighbour, len(self.reference) - skip)
        if len(logits) < FEW_ROWS and not skip and self.few_rows_product is not None:
            distance = 1 - self.few_rows_product.run(None, {"rows": unit_rows(features)})[0][:, k - 1]
        else:
            distance = self._numpy_distance(features, k, skip)
        return np.stack([-np.asarray(logits, np.float32).max(1), distance], 1)

    def _numpy_distance(self, features, k: int, skip: bool) -> np.ndarray:
        """parts' distances by NumPy, in chunks of CHUNK images."""
        reference = self._reference32
        distance = np.empty(len(features), np.float32)
        for start in range(0, len(features), CHUNK):
            rows = unit_rows(np.asarray(features[start:start + CHUNK]))
            if self.projection is not None:
                rows = rows @ self.projection
            # without ONNX Runtime's product, a few images against thousands of reference rows (10,000): faster
            # with the reference as the left operand (OpenBLAS copies the right one into its own layout); many
            # images: the usual order, whose row-major result the partition reads fast
            similarity = (reference @ rows.T).T if len(rows) < FEW_ROWS else rows @ reference.T
            if skip:
                own = np.arange(len(rows))
                similarity[own, start + own] = -np.inf
            distance[start:start + CHUNK] = 1 + np.partition(-similarity, k - 1, axis=1)[:, k - 1]
        return distance

    def prepare_few_rows(self) -> None:
        """Compares a few images a call with the reference in ONNX Runtime from now on (a one-thread session giving
        the `neighbour` largest similarities of unit rows, within the reference's directions); nothing without onnx
        and onnxruntime. For a process that scores many calls, a server: ONNX Runtime packs the constant reference
        for its kernels once, where OpenBLAS copies it on every call (benchmarks/unknown_score.py); a one-shot
        `cnncodes predict` would spend more on importing onnx than the product saves it."""
        try:
            from onnx import TensorProto, helper, numpy_helper

            from ..codes.onnx_graphs import ort_session
        except ImportError:
            return
        k = np.array([min(self.neighbour, len(self.reference))], np.int64)
        # float16 as the model file holds it: ONNX Runtime casts the constant once, at load (fewer bytes copied)
        constants = [numpy_helper.from_array(np.ascontiguousarray(self.reference.T, np.float16), "reference16"),
                     numpy_helper.from_array(k, "k")]
        steps = [helper.make_node("Cast", ["reference16"], ["reference"], to=TensorProto.FLOAT),
                 helper.make_node("MatMul", ["projected", "reference"], ["similarity"]),
                 helper.make_node("TopK", ["similarity", "k"], ["nearest", "order"])]
        if self.projection is None:
            steps.insert(0, helper.make_node("Identity", ["rows"], ["projected"]))
        else:
            constants.append(numpy_helper.from_array(np.asarray(self.projection, np.float32), "projection"))
            steps.insert(0, helper.make_node("MatMul", ["rows", "projection"], ["projected"]))
        width = self.reference.shape[1] if self.projection is None else len(self.projection)
        graph = helper.make_graph(
            steps, "few_rows_product", [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["n", width])],
            [helper.make_tensor_value_info("nearest", TensorProto.FLOAT, ["n", None])], constants)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        self.few_rows_product = ort_session(model.SerializeToString(), operator_threads=1)

    def __getstate__(self) -> dict:
        """Without the ONNX Runtime session, which cannot be pickled (a copy prepares its own, if it wants one)."""
        return self.__dict__ | {"few_rows_product": None}

    @cached_property
    def _reference32(self) -> np.ndarray:
        """The reference codes as float32, made once for all calls."""
        return self.reference.astype(np.float32)

    def _combine(self, parts: np.ndarray) -> np.ndarray:
        z = (parts - self.center) / self.spread
        return np.maximum(z[:, 0], 0) + z[:, 1]

    def score(self, features, logits: np.ndarray) -> np.ndarray:
        """Higher is less like the training images; above `threshold` is unknown. features, logits: what
        head.detector_inputs(codes) gives."""
        return self._combine(self.parts(features, logits))

    def state(self) -> dict[str, np.ndarray]:
        directions = {} if self.projection is None else {"unknown_projection": self.projection}
        return {"unknown_reference": self.reference, "unknown_center": self.center, "unknown_spread": self.spread,
                "unknown_threshold": np.float32(self.threshold), "unknown_keep": np.float32(self.keep),
                "unknown_neighbour": np.int64(self.neighbour)} | directions

    @classmethod
    def from_state(cls, state: dict) -> "UnknownDetector | None":
        if "unknown_reference" not in state:
            return None
        return cls(state["unknown_reference"], state["unknown_center"], state["unknown_spread"],
                   float(state["unknown_threshold"]), float(state["unknown_keep"]), int(state["unknown_neighbour"]),
                   projection=state.get("unknown_projection"))

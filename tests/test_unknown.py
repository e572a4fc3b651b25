"""'None of these': images of classes the model never saw score as unknown; known ones keep their class."""
import json
import pickle
import shutil
from dataclasses import replace

import numpy as np
import pytest

from cnncodes.errors import CnnCodesError
from cnncodes.heads import SoftmaxHead
from cnncodes.heads import unknown
from cnncodes.heads.unknown import UnknownDetector, principal_directions
from cnncodes.predict import Predictor, list_images

from .conftest import cli, need_shared


def auroc(known, unknown) -> float:
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(np.r_[np.zeros(len(known)), np.ones(len(unknown))], np.r_[known, unknown])


def test_the_threshold_keeps_the_share_asked_and_survives_a_round_trip():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 64)) * 4
    y = np.repeat(np.arange(3), 200)
    x = (centres[y] + rng.normal(0, 1, (600, 64))).astype(np.float32)
    head = SoftmaxHead("tuned", c_grid=(0.1,)).fit(x[:450], y[:450])
    detector = UnknownDetector.fit(head, x[:450], y[:450], x[450:], y[450:], keep=0.9)
    val = detector.score(x[450:], head.decision_function(x[450:]))
    assert abs((val <= detector.threshold).mean() - 0.9) < 0.01
    far = (rng.normal(0, 1, (100, 64)) * 4).astype(np.float32)  # points of no class
    assert auroc(val, detector.score(far, head.decision_function(far))) > 0.95
    again = UnknownDetector.from_state(detector.state())
    np.testing.assert_array_equal(again.score(far, head.decision_function(far)),
                                  detector.score(far, head.decision_function(far)))


def _low_rank_codes(rng, n: int, rank: int = 12, width: int = 256, noise: float = 0.05) -> np.ndarray:
    """Codes spanning a few directions, plus a little noise in every direction (as a network's codes do)."""
    return (rng.normal(0, 1, (n, rank)) @ rng.normal(0, 1, (rank, width)) + rng.normal(0, noise, (n, width))
            ).astype(np.float32)


def _exact_kth_distance(reference, queries, k: int, skip_self: bool = False) -> np.ndarray:
    """The cosine distance to the k-th nearest reference row, by scikit-learn's exhaustive search."""
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=k + skip_self, metric="cosine", algorithm="brute").fit(reference)
    return search.kneighbors(queries)[0][:, -1]


def test_the_neighbour_distance_is_the_cosine_distance_within_the_principal_directions():
    """The detector's distance to the 10th nearest training code, measured between projections onto the directions
    holding 95% of the reference's squared length, matches scikit-learn's exact cosine search; the projection keeps far
    fewer directions than the codes have, and with all of them it is exact."""
    rng = np.random.default_rng(2)
    x, y = _low_rank_codes(rng, 900), np.repeat(np.arange(3), 300)
    head = SoftmaxHead("tuned", c_grid=(0.1,)).fit(x[:600], y[:600])
    detector = UnknownDetector.fit(head, x[:600], y[:600], x[600:], y[600:])
    assert detector.projection.shape[1] <= 12 < x.shape[1]
    queries = np.r_[x[600:], _low_rank_codes(rng, 100, width=256, noise=0.5)]  # known-like and off the directions
    ours = detector.parts(queries, head.decision_function(queries))[:, 1]
    exact = _exact_kth_distance(x[:600], queries, detector.neighbour)
    np.testing.assert_allclose(ours, exact, atol=0.01)
    whole = principal_directions(x[:600] / np.linalg.norm(x[:600], axis=1, keepdims=True), subspace=1.0)
    assert whole.shape == (256, 256)


def test_calibration_leaves_each_image_out_of_its_own_neighbours(monkeypatch):
    rng = np.random.default_rng(3)
    x, y = _low_rank_codes(rng, 60, noise=0.3), np.repeat(np.arange(3), 20)
    head = SoftmaxHead("tuned", c_grid=(0.1,)).fit(x, y)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    detector = replace(UnknownDetector.fit(head, x, y), reference=unit.astype(np.float16), projection=None)
    # every direction (exact distances); chunks after the first, and both orders of the product
    monkeypatch.setattr(unknown, "CHUNK", 16)
    monkeypatch.setattr(unknown, "FEW_ROWS", 12)
    ours = detector.parts(x, head.decision_function(x), skip_self=True)[:, 1]
    exact = _exact_kth_distance(x, x, detector.neighbour, skip_self=True)
    np.testing.assert_allclose(ours, exact, atol=0.002)


def test_a_few_images_a_call_get_the_distances_many_get():
    """A server scores a few images a call, by ONNX Runtime's product with the reference (NumPy's without it): the
    distances of many images a call, within the principal directions and in every direction (there: exact)."""
    rng = np.random.default_rng(5)
    x, y = _low_rank_codes(rng, 900), np.repeat(np.arange(3), 300)
    head = SoftmaxHead("tuned", c_grid=(0.1,)).fit(x[:600], y[:600])
    projected = UnknownDetector.fit(head, x[:600], y[:600], x[600:], y[600:])
    unit = x[:600] / np.linalg.norm(x[:600], axis=1, keepdims=True)
    everywhere = replace(projected, reference=unit.astype(np.float16), projection=None)
    queries = np.r_[_low_rank_codes(rng, 10, width=256, noise=0.5), x[600:670]]  # off the directions, and known-like
    logits = head.decision_function(queries)
    assert unknown.FEW_ROWS <= len(queries)
    for detector in (projected, everywhere):
        many = detector.parts(queries, logits)
        without = replace(detector)  # NumPy's product, as a one-shot predict and a process without onnxruntime
        detector.prepare_few_rows()
        assert detector.few_rows_product is not None and without.few_rows_product is None  # (onnxruntime is here)
        for ours in (detector, without):
            few = np.concatenate([ours.parts(queries[s:s + n], logits[s:s + n])
                                  for s, n in ((0, 1), (1, 5), (6, unknown.FEW_ROWS - 1))])
            np.testing.assert_allclose(few, many[:len(few)], atol=1e-5)
        copied = pickle.loads(pickle.dumps(detector))  # (a model sent to another process; the session stays behind)
        copied.prepare_few_rows()
        np.testing.assert_array_equal(copied.parts(queries[:5], logits[:5]), detector.parts(queries[:5], logits[:5]))
    np.testing.assert_allclose(many[:, 1], _exact_kth_distance(x[:600], queries, everywhere.neighbour), atol=0.002)


def test_a_model_file_without_a_projection_measures_in_the_codes_own_directions():
    rng = np.random.default_rng(4)
    x, y = _low_rank_codes(rng, 400), np.arange(400) % 3
    head = SoftmaxHead("tuned", c_grid=(0.1,)).fit(x[:250], y[:250])
    state = UnknownDetector.fit(head, x[:250], y[:250], x[250:], y[250:]).state()  # calibrated on 150 new images
    assert "unknown_projection" in state
    x = x[:250]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    older = {key: value for key, value in state.items() if key != "unknown_projection"}
    older["unknown_reference"] = unit.astype(np.float16)  # as files written before the projection hold it
    detector = UnknownDetector.from_state(older)
    queries = _low_rank_codes(rng, 50)
    np.testing.assert_allclose(detector.parts(queries, head.decision_function(queries))[:, 1],
                               _exact_kth_distance(x, queries, detector.neighbour), atol=0.002)


def test_the_principal_directions_of_wide_and_tall_rows_agree_with_an_svd():
    rng = np.random.default_rng(5)
    for rows in (_low_rank_codes(rng, 40, width=256), _low_rank_codes(rng, 400, width=64)):  # wide, tall
        unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        ours = principal_directions(unit, 0.9)
        _, values, vt = np.linalg.svd(unit.astype(np.float64), full_matrices=False)
        count = int(np.searchsorted(np.cumsum(values ** 2), 0.9 * (values ** 2).sum())) + 1
        assert ours.shape == (unit.shape[1], count)
        np.testing.assert_allclose(ours @ ours.T, vt[:count].T @ vt[:count], atol=1e-4)  # the same subspace
    with pytest.raises(CnnCodesError, match="squared length"):
        principal_directions(unit, 1.5)


def test_a_reference_over_its_limit_is_a_draw_keeping_each_class_share():
    """More training codes than reference_max: each class keeps its share of the reference (a class of one image
    its one row), drawn from that class's codes, the same draw for the same seed."""
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(3), [600, 300, 1])
    x = _low_rank_codes(rng, len(y))
    head = SoftmaxHead("tuned", c_grid=(0.1,)).fit(x, y)
    detector = UnknownDetector.fit(head, x, y, x[:200], y[:200], reference_max=90, seed=1)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    kept = detector.reference.astype(np.float32) @ detector.projection.T  # back to the codes' space
    nearest = (kept @ unit.T).argmax(1)  # each reference row is one training code
    assert len(set(nearest)) == len(detector.reference) == 91
    np.testing.assert_array_equal(np.bincount(y[nearest]), [60, 30, 1])
    assert not np.isin(nearest, np.r_[0:60, 600:630]).all()  # a draw, not each class's first rows
    again = UnknownDetector.fit(head, x, y, x[:200], y[:200], reference_max=90, seed=1)
    np.testing.assert_array_equal(again.reference, detector.reference)
    other = UnknownDetector.fit(head, x, y, x[:200], y[:200], reference_max=90, seed=2)
    assert not np.array_equal(other.reference, detector.reference)
    with pytest.raises(CnnCodesError, match="at least one training code"):
        UnknownDetector.fit(head, x, y, x[:200], y[:200], reference_max=0)


def test_a_small_collection_calibrated_on_its_own_images_measures_in_every_direction():
    """Directions fitted to the images that also calibrate the threshold would hold more of their codes than of new
    images', and call new images of known classes unknown."""
    rng = np.random.default_rng(6)
    x, y = _low_rank_codes(rng, 60), np.repeat(np.arange(3), 20)
    head = SoftmaxHead("tuned", c_grid=(0.1,)).fit(x, y)
    assert UnknownDetector.fit(head, x, y).projection is None
    assert UnknownDetector.fit(head, x[:45], y[:45], x[45:], y[45:]).projection is None  # 15 validation images


def test_a_class_of_one_image_does_not_switch_cross_fitting_off():
    """A small collection with one mistyped label (a class of one image): calibration stays cross-fitted, so new
    images of the known classes are kept (on the head's own training logits most were called unknown)."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (3, 512))
    y = np.r_[np.repeat(np.arange(3), 15), 3]  # class 3: one image
    x = (centres[y % 3] + rng.normal(0, 3, (46, 512))).astype(np.float32)  # separable: training logits look sure

    def fold_head(xs, ys):
        return SoftmaxHead("tuned", c_grid=(1.0,)).fit(xs, ys, n_classes=4)

    head = fold_head(x, y)
    detector = UnknownDetector.fit(head, x, y, fold_head=fold_head)
    new = (centres[np.arange(300) % 3] + rng.normal(0, 3, (300, 512))).astype(np.float32)
    called = detector.score(new, head.decision_function(new)) > detector.threshold
    assert called.mean() < 0.2, called.mean()


@pytest.fixture(scope="module")
def two_class_run(tiny_folder, tmp_path_factory):
    """A run on the tiny folder's bars and discs; its checkers were never seen."""
    root = tmp_path_factory.mktemp("two")
    for name in ("bars", "discs"):
        shutil.copytree(tiny_folder / name, root / "data" / name)
    (root / "data" / "unlabeled").mkdir()
    for n in range(5):  # photos without a label: five of the unseen class
        shutil.copy(tiny_folder / "checkers" / f"{n:03d}.png", root / "data" / "unlabeled" / f"c{n}.png")
    assert cli("run", "--data", root / "data", "--out", root / "run", "--no-report").returncode == 0
    return root / "run"


@pytest.mark.slow  # runs and predictions over the CLI: once, not again in the fp32 pass
def test_unseen_synthetic_class_is_unknown_and_known_ones_are_not(two_class_run, tiny_folder):
    predictor = Predictor(two_class_run)
    unseen = predictor(list_images([tiny_folder / "checkers"]))
    known = predictor(list_images([tiny_folder / "bars", tiny_folder / "discs"]))
    assert np.mean([p.unknown for p in unseen]) >= 0.8 and np.mean([p.unknown for p in known]) <= 0.2
    assert unseen[0].label == "unknown" and unseen[0].as_dict()["unknown"] is True
    metrics = json.loads((two_class_run / "metrics.json").read_text())
    assert 0 <= metrics["unknown"]["test_share_called_unknown"] <= 0.5 and metrics["unknown"]["keep"] == 0.95
    assert metrics["unlabelled"]["images"] == 5 and "cross-validation" in metrics["unlabelled"]["chosen_on"]
    import csv

    with open(two_class_run / "unlabeled_predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and sum(r["label"] == "unknown" for r in rows) >= 4 and float(rows[0]["unknown_score"])


@pytest.mark.slow
def test_no_unknown_when_switched_off(two_class_run, tiny_folder, tmp_path):
    checkers = sorted((tiny_folder / "checkers").glob("*.png"))[:3]
    said = cli("predict", two_class_run, *checkers)
    assert said.returncode == 0 and said.stdout.count("unknown: none of these") >= 2
    quiet = cli("predict", two_class_run, *checkers, "--no-unknown")
    assert quiet.returncode == 0 and "unknown" not in quiet.stdout
    data = two_class_run.parent / "data"
    assert cli("run", "--data", data, "--out", tmp_path / "off", "--no-report", "--no-unknown").returncode == 0
    assert json.loads((tmp_path / "off" / "metrics.json").read_text())["unknown"] is None
    assert all(p.unknown_score is None for p in Predictor(tmp_path / "off")(checkers))


@pytest.mark.slow  # real photos through the network
@pytest.mark.parametrize("flags", [[], ["--finetune", "1", "--epochs", "2"]], ids=["tuned", "fine-tuned"])
def test_real_photos_of_unseen_classes_score_higher(tmp_path, flags):
    """CIFAR-10 photos: a run on automobile, bird and ship; frogs, horses and deer were never seen. A fine-tuned
    run's detector measures its own pooled features."""
    exact = need_shared("cifar10-exact")
    for name in ("automobile", "bird", "ship"):
        shutil.copytree(exact / "train" / name, tmp_path / "data" / name,
                        ignore=lambda folder, files: sorted(files)[60:])
    assert cli("run", "--data", tmp_path / "data", "--out", tmp_path / "run", "--no-report", *flags).returncode == 0
    predictor = Predictor(tmp_path / "run")
    known = predictor(list_images([exact / "test" / n for n in ("automobile", "bird", "ship")]))
    unseen = predictor(list_images([exact / "test" / n for n in ("frog", "horse", "deer")]))
    score = auroc([p.unknown_score for p in known], [p.unknown_score for p in unseen])
    assert score >= 0.8, score
    assert np.mean([p.unknown for p in known]) <= 0.15 and np.mean([p.unknown for p in unseen]) >= 0.3

"""The softmax head: both modes learn, the tuned one chooses its L2 on validation, model files are safe."""
import numpy as np
import pytest

from cnncodes import CnnCodesError
from cnncodes.heads import SoftmaxHead
from cnncodes.heads.model_file import load_model_file, save_model
from cnncodes.settings import RunSettings


def blobs(n=600, d=20, k=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, d))
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(0, 1.5, (n, d))).astype(np.float32), y


def independent_search(x, y, val_views, y_val, grid):
    """The C search recomputed with scikit-learn alone: standardise on train, fit each C, average the views."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    model = LogisticRegression(max_iter=1000, warm_start=True)
    scores = {}
    for c in sorted(grid):
        model.set_params(C=c).fit(scaler.transform(x), y)
        proba = sum(model.predict_proba(scaler.transform(v)) for v in val_views) / len(val_views)
        scores[c] = float((proba.argmax(1) == y_val).mean())
    return scores


def test_tuned_head_chooses_the_c_that_is_best_on_validation():
    x, y = blobs(d=60, seed=3)
    x += np.random.default_rng(1).normal(0, 4, x.shape).astype(np.float32)  # noisy enough for C to matter
    grid = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    head = SoftmaxHead(c_grid=grid).fit(x[:300], y[:300], x[300:500], y[300:500])
    scores = independent_search(x[:300], y[:300], [x[300:500]], y[300:500], grid)
    assert len(set(scores.values())) > 1  # the grid really separates the choices
    assert [r["validation_accuracy"] for r in head.search_] == pytest.approx([scores[c] for c in sorted(grid)], abs=0.006)
    assert scores[head.best_c_] == max(scores.values())
    assert head.validation_accuracy_ == pytest.approx(max(scores.values()), abs=0.006)
    assert head.score(x[500:], y[500:]) > 0.6
    np.testing.assert_allclose(head.predict_proba(x[:5]).sum(1), 1, rtol=1e-5)


def test_c_search_scores_validation_over_every_view():
    """With flipped codes the test split averages the probabilities of both views; so must the C search."""
    x, y = blobs(d=30, seed=5)
    rng = np.random.default_rng(2)
    mirror = x[300:500] + rng.normal(0, 3, (200, 30)).astype(np.float32)
    grid = (1e-3, 1e-2, 1e-1)
    head = SoftmaxHead(c_grid=grid).fit(x[:300], y[:300], [x[300:500], mirror], y[300:500])
    scores = independent_search(x[:300], y[:300], [x[300:500], mirror], y[300:500], grid)
    single = independent_search(x[:300], y[:300], [x[300:500]], y[300:500], grid)
    assert scores != single
    assert [r["validation_accuracy"] for r in head.search_] == pytest.approx([scores[c] for c in sorted(grid)], abs=0.006)
    assert head.mean_.shape == (30,) and len(head.search_) == 3


def test_c_search_sample_is_ten_thousand_rows_or_four_per_feature():
    from cnncodes.heads.softmax import search_sample_size

    assert search_sample_size(40_140, 1280) == 10_000  # Lite0 codes of CIFAR-10's training split
    assert search_sample_size(80_280, 8064) == 32_256  # four rows per feature for wide concatenated codes
    assert search_sample_size(3_187, 1280) == 3_187  # fewer rows than that: all of them
    x, y = blobs(n=600, d=20)
    assert SoftmaxHead(c_grid=(0.01, 0.1)).fit(x[:500], y[:500], x[500:], y[500:]).search_rows_ == 500


def test_sgd_head_records_the_learning_curve():
    x, y = blobs()
    head = SoftmaxHead("sgd", eval_every=10).fit(x[:400], y[:400], x[400:500], y[400:500])
    steps = [r["step"] for r in head.curve_]
    assert steps[0] == 0 and steps[-1] == 40 and len(steps) == 5  # 400 images / batches of 10
    assert head.curve_[-1]["validation_accuracy"] > head.curve_[0]["validation_accuracy"]
    assert head.score(x[500:], y[500:]) > 0.8


def test_single_class_is_a_clear_error():
    x, _ = blobs()
    with pytest.raises(CnnCodesError, match="single class"):
        SoftmaxHead().fit(x, np.zeros(len(x), int))


def test_model_file_round_trip_and_refusals(tmp_path):
    x, y = blobs()
    head = SoftmaxHead(c_grid=(0.1,)).fit(x, y)
    save_model(tmp_path / "m.npz", head, RunSettings(), ["a", "b", "c", "d"])
    loaded, meta = load_model_file(tmp_path / "m.npz")
    np.testing.assert_allclose(loaded.predict_proba(x), head.predict_proba(x), rtol=1e-5)
    assert meta["backbone"] == "efficientnet_lite0"
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CnnCodesError, match="not a cnncodes model file"):
        load_model_file(tmp_path / "junk.npz")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 a photo given as the model")
    with pytest.raises(CnnCodesError, match="not a cnncodes model file") as refused:
        load_model_file(tmp_path / "photo.jpg")
    assert "pickle" not in str(refused.value)  # NumPy's words for a file that is not .npz suggest unpickling it
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(CnnCodesError, match="not a cnncodes model"):
        load_model_file(tmp_path / "pickled.npz")  # object arrays would need pickle: refused


def test_model_file_of_another_version_is_refused(tmp_path):
    import json

    x, y = blobs()
    head = SoftmaxHead(c_grid=(0.1,)).fit(x, y)
    meta = {"format": "cnncodes-model", "version": 99, "backbone": "efficientnet_lite0", "class_names": list("abcd")}
    np.savez(tmp_path / "v99.npz", meta=np.array(json.dumps(meta)), **head.state())
    with pytest.raises(CnnCodesError, match="version 99"):
        load_model_file(tmp_path / "v99.npz")


@pytest.mark.parametrize("how", ["sqrt", "l2"])
def test_normalized_codes_still_learn_and_round_trip(tmp_path, how):
    x, y = blobs()
    x = np.abs(x)
    head = SoftmaxHead(normalize=how).fit(x[:400], y[:400], x[400:500], y[400:500])
    assert head.score(x[500:], y[500:]) > 0.8
    save_model(tmp_path / "m.npz", head, RunSettings(), list("abcd"))
    loaded, _ = load_model_file(tmp_path / "m.npz")
    np.testing.assert_allclose(loaded.predict_proba(x[:9]), head.predict_proba(x[:9]), rtol=1e-4)


def test_mlp_head_learns_stops_early_and_round_trips(tmp_path):
    from cnncodes.heads.mlp import MLPHead

    x, y = blobs()
    head = MLPHead(hidden=64, epochs=30, patience=5).fit(x[:400], y[:400], x[400:500], y[400:500])
    assert head.score(x[500:], y[500:]) > 0.9
    assert 1 <= len(head.curve_) <= 30
    save_model(tmp_path / "mlp.npz", head, RunSettings(), list("abcd"))
    loaded, meta = load_model_file(tmp_path / "mlp.npz")
    assert meta["mode"] == "mlp"
    np.testing.assert_allclose(loaded.predict_proba(x[:9]), head.predict_proba(x[:9]), rtol=1e-4)


def test_unknown_normalization_is_refused_before_any_work():
    with pytest.raises(CnnCodesError, match="--normalize"):
        SoftmaxHead(normalize="cube")


def test_c_search_on_a_subsample_then_refit_on_everything():
    x, y = blobs(n=1200)
    head = SoftmaxHead(search_samples=200).fit(x[:800], y[:800], x[800:1000], y[800:1000])
    assert head.search_rows_ == 200 and head.mean_.shape == (20,)
    assert head.score(x[1000:], y[1000:]) > 0.9
    scores = independent_search(x[:800], y[:800], [x[800:1000]], y[800:1000], (head.best_c_,))
    assert head.validation_accuracy_ == pytest.approx(scores[head.best_c_], abs=0.006)  # the chosen C, all rows


@pytest.mark.parametrize("mode", ["tuned", "sgd", "mlp"])
def test_balanced_class_weight_raises_the_rare_class_recall(mode):
    """Imbalanced training data (a class with 5% of the images): weighting classes equally in the loss finds more
    of the rare class on balanced test data, for every head that trains on codes."""
    from cnncodes.heads import make_head

    rng = np.random.default_rng(4)
    centres = rng.normal(0, 1.2, (3, 10))

    def draw(counts):
        y = np.repeat(np.arange(3), counts)
        return (centres[y] + rng.normal(0, 1.5, (len(y), 10))).astype(np.float32), y

    x, y = draw([600, 600, 30])
    xv, yv = draw([100, 100, 100])
    xt, yt = draw([400, 400, 400])
    recall = {}
    for weight in ("none", "balanced"):
        head = make_head(mode, class_weight=weight, eval_every=10)
        if mode == "tuned":
            head.c_grid = (0.01,)
        head.fit(x, y, xv, yv, n_classes=3)
        recall[weight] = float((head.predict(xt[yt == 2]) == 2).mean())
    assert recall["balanced"] > recall["none"] + 0.1, recall


def test_unknown_class_weight_is_refused():
    with pytest.raises(CnnCodesError, match="--class-weight"):
        SoftmaxHead(class_weight="inverse")


@pytest.mark.parametrize("classes, weight, normalize", [(6, "none", "none"), (2, "none", "sqrt"),
                                                        (4, "balanced", "none")])
def test_streamed_fit_is_scikit_learns_full_batch_fit(tmp_path, classes, weight, normalize):
    """The refit reads codes chunk by chunk from disk; scikit-learn, fitted on the whole standardised array, is
    the reference: same objective, so the same weights (up to the solvers' tolerance)."""
    from sklearn.linear_model import LogisticRegression

    from cnncodes.codes.matrix import CodeMatrix, FileRows
    from cnncodes.heads import lbfgs
    from cnncodes.heads.base import normalize_codes, scaler_stats, standardize

    rng = np.random.default_rng(classes)
    y = rng.integers(0, classes, 3000) if weight == "none" else np.r_[np.zeros(2400, int), rng.integers(1, classes, 600)]
    x = (rng.normal(size=(3000, 40)) + rng.normal(size=(classes, 40))[y] * 0.4 + 2).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    on_disk = CodeMatrix([FileRows(tmp_path / "x.npy")])
    xn = normalize_codes(x, normalize)
    mean, scale = scaler_stats(xn)
    reference = LogisticRegression(C=0.01, max_iter=5000, tol=1e-8, class_weight=None if weight == "none" else "balanced")
    reference.fit(standardize(xn, mean, scale), y)
    old = lbfgs.RESIDENT_BYTES
    lbfgs.RESIDENT_BYTES = 0  # read from disk at every evaluation
    try:
        head = SoftmaxHead(c_grid=(0.01,), normalize=normalize, class_weight=weight, max_iter=5000).fit(on_disk, y)
    finally:
        lbfgs.RESIDENT_BYTES = old
    expected = reference.predict_proba(standardize(xn, mean, scale))
    np.testing.assert_allclose(head.predict_proba(on_disk), expected, atol=2e-3)
    np.testing.assert_allclose(head.mean_, mean, rtol=1e-4, atol=1e-4)


def test_tuned_head_on_codes_on_disk_reads_a_chunk_at_a_time(tmp_path, monkeypatch):
    """Memory follows the chunk, not the data: no read of the training codes is larger than a chunk or the
    C-search sample, and nothing is kept between evaluations when no resident budget is left."""
    from cnncodes.codes import matrix as code_matrix
    from cnncodes.codes.matrix import CodeMatrix, FileRows
    from cnncodes.heads import lbfgs

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 6000)
    x = (rng.normal(size=(6000, 40)) + rng.normal(size=(3, 40))[y]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    reads = []
    take = FileRows.take
    monkeypatch.setattr(FileRows, "take", lambda self, rows: reads.append(len(rows)) or take(self, rows))
    monkeypatch.setattr(code_matrix, "CHUNK_BYTES", 256 * 40 * 4)  # 256 rows
    monkeypatch.setattr(lbfgs, "RESIDENT_BYTES", 0)
    on_disk = CodeMatrix([FileRows(tmp_path / "x.npy")])
    head = SoftmaxHead(search_samples=500).fit(on_disk.select(np.arange(5000)), y[:5000], x[5000:], y[5000:])
    assert head.validation_accuracy_ > 0.9 and head.search_rows_ == 500
    assert max(reads) <= 500 and sum(reads) > 10 * 5000  # many passes, each in small reads


def test_a_small_validation_split_hands_the_choice_of_c_to_cross_validation():
    """9 validation images tie most Cs on accuracy: C is chosen by stratified 5-fold log-loss over train +
    validation (recomputed here fold by fold with scikit-learn), then refit on all of them."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = blobs(n=600, d=60, seed=3)
    x += np.random.default_rng(1).normal(0, 4, x.shape).astype(np.float32)
    grid = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    head = SoftmaxHead(c_grid=grid).fit(x[:51], y[:51], x[51:60], y[51:60])
    assert head.selection_.startswith("5-fold cross-validation")
    xs, ys = x[:60], y[:60]
    losses = {}
    for c in grid:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
        losses[c] = np.mean([log_loss(ys[held], model.fit(xs[fit], ys[fit]).predict_proba(xs[held]), labels=np.unique(ys))
                             for fit, held in StratifiedKFold(5, shuffle=True, random_state=0).split(xs, ys)])
    assert head.best_c_ == min(losses, key=losses.get)  # the C of the lowest cross-validated log-loss
    assert [r["log_loss"] for r in head.search_] == pytest.approx([losses[c] for c in sorted(grid)], rel=1e-3)
    assert head.score(x[60:], y[60:]) > 0.6


def test_without_a_validation_split_the_head_says_its_c_was_not_chosen():
    x, y = blobs(n=60, seed=2)
    head = SoftmaxHead(c_grid=(1e-3, 1e-2, 1e-1)).fit(x, y)
    assert head.best_c_ == 1e-2 and head.selection_ == "none: no validation split (C is the grid's middle)"
    assert SoftmaxHead(c_grid=(1e-1,)).fit(x, y).selection_ == "none: one C given"


def test_a_class_of_one_image_does_not_switch_cross_validation_off():
    """A mistyped label makes a class of one image: C is still cross-validated (that image stays in every fit, the
    log loss counts every class), each C's loss as scikit-learn computes it on the same folds, and the run says so."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = blobs(n=600, d=60, seed=3)
    x += np.random.default_rng(1).normal(0, 8, x.shape).astype(np.float32)
    y = y.copy()
    y[20] = y.max() + 1  # a class of its own, among the training images
    grid = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    head = SoftmaxHead(c_grid=grid).fit(x[:51], y[:51], x[51:60], y[51:60], n_classes=int(y.max()) + 1)
    assert head.selection_.startswith("5-fold cross-validation") and "1 image whose class has no other" in head.selection_
    shared = np.r_[0:20, 21:60]
    losses, accuracies = {}, {}
    for c in grid:
        model, folds = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)), []
        for fit, held in StratifiedKFold(5, shuffle=True, random_state=0).split(shared, y[shared]):
            fit, held = np.sort(np.r_[shared[fit], 20]), shared[held]
            model.fit(x[fit], y[fit])
            folds.append((log_loss(y[held], model.predict_proba(x[held]), labels=np.unique(y[:60])),
                          model.score(x[held], y[held])))
        losses[c], accuracies[c] = np.mean(folds, 0)
    assert [r["log_loss"] for r in head.search_] == pytest.approx([losses[c] for c in sorted(grid)], rel=1e-3)
    assert [r["validation_accuracy"] for r in head.search_] == pytest.approx([accuracies[c] for c in sorted(grid)])
    assert head.best_c_ == min(losses, key=losses.get) and head.validation_accuracy_ == accuracies[head.best_c_]


def test_stratified_folds_keep_a_lone_image_in_every_fit_and_hold_out_every_other_once():
    from cnncodes.heads.base import stratified_folds

    assert stratified_folds(np.array([0, 1, 2]), 0) == []  # nothing to cross-validate
    assert stratified_folds(np.array([0, 0, 0, 1, 2]), 0) == []  # one class of two or more: no classifier to score
    y = np.array([0, 1, 0, 2, 1, 0, 1, 0, 1])  # image 3 alone in its class; the smallest other class has 4
    folds = stratified_folds(y, 0)
    assert len(folds) == 4
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == [0, 1, 2, 4, 5, 6, 7, 8]  # each other image held out exactly once
    for fit, out in folds:
        assert 3 in fit and not set(fit) & set(out) and set(y[fit]) == {0, 1, 2} and list(fit) == sorted(fit)


def test_a_small_validation_split_hands_the_mlps_epochs_to_cross_validation():
    """With 9 validation images the MLP's epoch count is the best mean accuracy of 5 folds over train + validation,
    then every labelled image trains for that many epochs: the same network as such a fit made directly."""
    from cnncodes.heads.base import stratified_folds
    from cnncodes.heads.mlp import MLPHead

    x, y = blobs(n=600, d=40, seed=5)
    options = dict(hidden=32, epochs=12, learning_rate=1e-2, batch_size=16)
    head = MLPHead(**options).fit(x[:51], y[:51], x[51:60], y[51:60])
    epochs = int(head.selection_.rsplit(": ", 1)[1].split()[0])
    assert head.selection_.startswith("5-fold cross-validation") and len(head.curve_) == 12
    means = [c["validation_accuracy"] for c in head.curve_]
    assert epochs == int(np.argmax(means)) + 1 and head.validation_accuracy_ == max(means)
    direct = MLPHead(**options)
    direct.n_classes_ = head.n_classes_
    curves = [direct._train(x[fit], y[fit], [x[held]], y[held], stop_early=False)[1]
              for fit, held in stratified_folds(y[:60], 0)]
    assert np.allclose(np.mean(curves, 0), means)
    net = direct._train(x[:60], y[:60], None, None, stop_early=False, epochs=epochs)[0]
    direct._set_weights(net)
    direct.mean_, direct.scale_ = head.mean_, head.scale_
    assert np.allclose(direct.decision_function(x[60:]), head.decision_function(x[60:]), atol=1e-5)
    assert head.score(x[60:], y[60:]) > 0.6


def test_metrics_of_a_test_split_without_some_class_match_sklearn_and_stay_quiet():
    """A test split with no image of a class the head predicts: balanced accuracy averages the recalls of the classes
    present (scikit-learn's definition), interval and all, and no scikit-learn warning reaches the user (the run
    prints its own)."""
    import warnings

    from cnncodes.outputs.metrics import classification_metrics

    y_true = np.array([0, 0, 0, 2, 2])
    proba = np.eye(3)[[0, 1, 0, 2, 1]]  # one image of each present class called 1, which has no test image
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = classification_metrics(y_true, proba, ["a", "b", "c"])
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert metrics["accuracy"] == pytest.approx(3 / 5) and metrics["per_class"]["b"]["images"] == 0

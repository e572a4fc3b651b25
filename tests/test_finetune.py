"""Fine-tuning the last blocks on cached activations: the split is exact, activations are cached in half
precision, the trained blocks travel in the model file, and nothing touches the shared backbone."""
import json

import numpy as np
import pytest
import torch

from cnncodes import CnnCodesError, extract_codes
from cnncodes.backbones import get_backbone, load_model, top_network
from cnncodes.backbones.cut import Trunk, split_network
from cnncodes.data.datasets import load_dataset
from cnncodes.heads.finetune import FineTuneHead
from cnncodes.heads.model_file import load_model_file
from cnncodes.presets import resolve

from .conftest import cli


@pytest.mark.parametrize("top_blocks", [0, 1, 3])
def test_trunk_then_top_gives_the_backbone_codes(top_blocks):
    model = load_model("efficientnet_lite0")
    trunk, top = split_network(model, top_blocks)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        flat = Trunk(trunk)(x)
        shape = trunk(x).shape[1:]
        again = top(flat.view(-1, *shape)).mean((2, 3))
        np.testing.assert_allclose(again.numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_cut_codes_are_half_precision_activation_maps(tiny_folder):
    spec = get_backbone("efficientnet_lite0:cut=1")
    _, shape = top_network("efficientnet_lite0:cut=1")
    assert shape == (192, 7, 7) and spec.feature_dim == 192 * 7 * 7 and spec.code_dtype == "float16"
    codes = extract_codes(load_dataset(tiny_folder), "efficientnet_lite0:cut=1", progress=False)
    assert codes.vectors.dtype == np.float16 and codes.vectors.shape == (60, 192 * 7 * 7)
    maps = np.asarray(codes.vectors)
    assert np.isfinite(maps).all() and maps.max() > 0


def test_fine_tuning_learns_and_leaves_the_shared_backbone_alone(tiny_folder):
    codes = extract_codes(load_dataset(tiny_folder), "efficientnet_lite0:cut=1", progress=False)
    before = {k: v.clone() for k, v in load_model("efficientnet_lite0").state_dict().items()}
    x, y = codes.part("train")
    head = FineTuneHead("efficientnet_lite0:cut=1", epochs=2, batch_size=16).fit(x, y, *codes.part("validation"),
                                                                                n_classes=3)
    assert head.score(*codes.part("test")) > 0.9  # images it neither trained nor chose its epoch on
    assert [row["epoch"] for row in head.curve_][:2] == [0, 1]
    # what fitting computed for the unknown detector (the pretrained top's features, the kept epoch's logits) gives
    # the detector that passing the rows through the tops again gives
    from cnncodes.heads.unknown import UnknownDetector

    x_val, y_val = codes.part("validation")
    assert head.seen_ is not None
    np.testing.assert_allclose(head.seen_.validation_logits, head.decision_function(x_val), atol=1e-4)  # kept epoch's
    from_fit = UnknownDetector.fit(head, x, y, x_val, y_val, validation_unseen=True, seen=head.seen_)
    recomputed = UnknownDetector.fit(head, x, y, x_val, y_val, validation_unseen=True)
    features, logits = head.detector_inputs(x_val)  # distances compare across the two fits' own directions
    np.testing.assert_allclose(from_fit.parts(features, logits), recomputed.parts(features, logits), atol=2e-3)
    np.testing.assert_allclose(from_fit.center, recomputed.center, rtol=1e-3, atol=1e-3)
    assert from_fit.threshold == pytest.approx(recomputed.threshold, abs=1e-2)
    after = load_model("efficientnet_lite0").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    again = FineTuneHead.from_state(head.state(), "efficientnet_lite0:cut=1")
    np.testing.assert_allclose(again.decision_function(x), head.decision_function(x), atol=1e-5)
    with pytest.raises(CnnCodesError, match="do not fit"):
        FineTuneHead.from_state(head.state(), "efficientnet_lite0:cut=0")
    # the detector measures the network's own codes (the pretrained top's), not the fine-tuned features
    exact = dict(runtime="torch", precision="fp32", progress=False)
    maps = extract_codes(load_dataset(tiny_folder), "efficientnet_lite0:cut=1", **exact).part("train")[0]
    plain = extract_codes(load_dataset(tiny_folder), "efficientnet_lite0", **exact).part("train")[0]
    fp32 = FineTuneHead.from_state(head.state(), "efficientnet_lite0:cut=1")
    fp32.precision = "fp32"
    features, reference = fp32.detector_features(maps), np.asarray(plain, np.float32)
    cosine = (features * reference).sum(1) / np.linalg.norm(features, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.99  # the maps are stored in float16
    before = fp32.embed(maps), features
    with torch.no_grad():  # training moves the fine-tuned top: the detector's features stay where they were
        for weight in fp32.net_[0].parameters():
            weight.mul_(0.5)
    assert not np.allclose(fp32.embed(maps), before[0], atol=1e-2)
    np.testing.assert_array_equal(fp32.detector_features(maps), before[1])


def test_finetune_run_then_predict_and_evaluate_agree(tiny_folder, tmp_path):
    pytest.importorskip("onnxruntime")
    result = cli("run", "--data", tiny_folder, "--finetune", "1", "--epochs", "2", "--flip", "--out", tmp_path,
                 "--validation-percent", "50",  # enough validation images to calibrate its detector on
                 "--runtime", "onnx")  # the graph its export reuses: the file's codes are the run's
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "settings.json").read_text())["finetune_epochs"] == 2
    assert [row["epoch"] for row in json.loads((tmp_path / "curve.json").read_text())["curve"]] == [0, 1, 2]
    assert "fine-tuning: 2 of 2 epochs run, kept " in result.stdout  # early stopping may keep epoch 0: it says so
    assert "validation images, a noisy choice" in result.stdout  # the tiny folder's validation split is small
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split_sizes"]["validation"] >= 20 and metrics["unknown"]["test_share_called_unknown"] < 0.5
    assert metrics["backbone"] == "efficientnet_lite0:cut=1" and metrics["head"] == "finetune"
    assert metrics["accuracy"] > 0.8
    assert (tmp_path / "report.html").exists() and (tmp_path / "learning_curve.png").exists()
    # the map draws the fine-tuned features of test images; no data-efficiency curve of features that saw every label
    assert (tmp_path / "tsne.png").exists() and not (tmp_path / "data_efficiency.json").exists()
    assert "No curve of accuracy against training set size" in (tmp_path / "report.html").read_text()
    evaluated = cli("evaluate", tmp_path / "model.npz", "--data", tiny_folder)
    assert evaluated.returncode == 0 and f"{metrics['accuracy'] * 100:.2f}%" in evaluated.stdout
    with np.load(tmp_path / "test_predictions.npz") as z:
        first, proba = str(z["ids"][0]), z["proba"][0]
    predicted = cli("predict", tmp_path / "model.npz", tiny_folder / first, "--top-k", "1")
    assert predicted.returncode == 0, predicted.stderr
    _, meta = load_model_file(tmp_path / "model.npz")
    assert predicted.stdout.split(": ")[1].split()[0] == meta["class_names"][int(proba.argmax())]
    explained = cli("predict", tmp_path, tiny_folder / first, "--explain", tmp_path / "maps")
    assert explained.returncode == 0, explained.stderr
    assert len(list((tmp_path / "maps").glob("*.jpg"))) == 1
    # the exported file carries the fine-tuned top and its detector: the same answers, up to the top's bf16
    from cnncodes.export import export_model
    from cnncodes.predict import Predictor, list_images

    exported, own = Predictor(export_model(tmp_path, tmp_path / "model.onnx")), Predictor(tmp_path)
    images = list_images([tiny_folder])[::4]
    ours, theirs = own(images), exported(images)
    assert exported.one_core_calls and not own.one_core_calls  # its top runs in torch: a server gives it one lane
    assert np.mean([a.top[0][0] == b.top[0][0] for a, b in zip(ours, theirs)]) >= 0.9
    assert np.median([abs(a.unknown_score - b.unknown_score) for a, b in zip(ours, theirs)]) < 0.1


def test_a_fine_tuned_run_with_few_validation_images_has_no_detector(tiny_folder):
    """Its detector is calibrated on validation images only (fine-tuning never trained on them); 10 are too few."""
    from cnncodes.heads.unknown import UNSEEN_CALIBRATION
    from cnncodes.pipeline import fit_unknown
    from cnncodes.settings import RunSettings

    cut = "efficientnet_lite0:cut=1"
    codes = extract_codes(load_dataset(tiny_folder), cut, progress=False)
    assert (codes.splits == "validation").sum() < UNSEEN_CALIBRATION
    assert fit_unknown(None, codes, RunSettings(backbone=cut, head="finetune")) is None


def test_epochs_set_the_fine_tuning_schedule_and_are_refused_for_other_heads(tiny_folder, tmp_path):
    from cnncodes.heads import make_head
    from cnncodes.heads.finetune import EPOCHS
    from cnncodes.settings import RunSettings

    assert make_head("finetune", backbone="efficientnet_lite0:cut=1", epochs=2).epochs == 2
    assert make_head("finetune", backbone="efficientnet_lite0:cut=1").epochs == EPOCHS
    refused = cli("run", "--data", tiny_folder, "--head", "tuned", "--epochs", "3", "--out", tmp_path)
    assert refused.returncode != 0 and "--epochs sets how long --finetune K trains" in refused.stderr
    assert "this run's head is tuned" in refused.stderr and "Traceback" not in refused.stderr
    refused = cli("run", "--data", tiny_folder, "--epochs", "3", "--out", tmp_path)  # the head decided: not fine-tuning
    assert refused.returncode != 0 and "this run does not fine-tune: 45 labelled images" in refused.stderr
    with pytest.raises(CnnCodesError, match="head is mlp"):  # the Python API refuses it too
        RunSettings(head="mlp", finetune_epochs=3)
    assert RunSettings.from_dict({"head": "tuned"}).finetune_epochs is None  # a run recorded without the setting


@pytest.mark.parametrize("kwargs,message", [
    ({"backbone": "inception_v3_2015"}, "one EfficientNet-Lite"),
    ({"backbone": "efficientnet_lite0+efficientnet_lite1"}, "one EfficientNet-Lite"),
    ({"head": "mlp"}, "does not combine with --head mlp"),
])
def test_finetune_refuses_what_it_cannot_train(kwargs, message):
    with pytest.raises(CnnCodesError, match=message):
        resolve(None, finetune=1, **kwargs)


@pytest.mark.parametrize("name,message", [
    ("efficientnet_lite0:cut=30", "top_blocks must be in 0..16"),
    ("efficientnet_lite0:cut=1:layers=multi", "do not combine"),
    ("inception_v3_2015:cut=1", "bad backbone option"),
])
def test_bad_cuts_are_named(name, message):
    with pytest.raises(CnnCodesError, match=message):
        get_backbone(name)


def test_fine_tuning_computes_in_the_precision_asked_for(tiny_folder, monkeypatch):
    """--precision fp32 (or a CPU without bf16) trains and predicts without bf16 autocast."""
    codes = extract_codes(load_dataset(tiny_folder), "efficientnet_lite0:cut=1", progress=False)
    seen = []
    autocast = torch.autocast

    def spy(*args, **kwargs):
        seen.append(kwargs.get("enabled", True))
        return autocast(*args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    head = FineTuneHead("efficientnet_lite0:cut=1", epochs=1, batch_size=16, precision="fp32")
    head.fit(*codes.part("train"), *codes.part("validation"), n_classes=3).predict_proba(codes.part("test")[0])
    assert seen and not any(seen)


def test_a_measured_training_step_tells_what_an_epoch_costs():
    """The step measured before a run (presets.choose_head) costs per image what an epoch of fitting costs: the
    difference between fits of 3 epochs and of 1 (the linear probe and the rest cancel out), within a factor of 3
    (the machine's speed moves between the two measurements)."""
    import time

    from cnncodes.heads.finetune import step_seconds_per_image

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 192 * 7 * 7)).astype(np.float16)
    y = np.arange(512) % 10

    def fit_seconds(epochs):
        started = time.perf_counter()
        FineTuneHead("efficientnet_lite0:cut=1", epochs=epochs).fit(x, y, n_classes=10)
        return time.perf_counter() - started

    fit_seconds(1)  # the first fit also loads the weights and sets up the kernels
    epoch = (fit_seconds(3) - fit_seconds(1)) / 2 / len(x)
    step = step_seconds_per_image("efficientnet_lite0:cut=1")
    assert epoch / 3 < step < epoch * 3, (step, epoch)


def test_the_auto_head_fine_tunes_where_it_trains_fast_and_can_choose_its_epoch(monkeypatch):
    from types import SimpleNamespace

    from cnncodes.codes import runtime
    from cnncodes.heads import finetune
    from cnncodes.presets import choose_head
    from cnncodes.settings import RunSettings

    monkeypatch.delenv(runtime.PRECISION_ENV, raising=False)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    steps = []  # the training steps measured: only where everything else allows fine-tuning

    def fast_step(backbone, precision):
        steps.append(backbone)
        return 0.7e-3

    monkeypatch.setattr(finetune, "step_seconds_per_image", fast_step)
    monkeypatch.setattr(runtime, "resolve_device", lambda device, runtime="torch": "cuda")  # the CPU decides
    large = SimpleNamespace(splits=np.array(["train"] * 9_900 + ["validation"] * 100 + ["test"] * 100))
    small = SimpleNamespace(splits=np.array(["train"] * 9_901 + ["validation"] * 99 + ["test"] * 100))
    fewer = SimpleNamespace(splits=np.array(["train"] * 9_899 + ["validation"] * 100 + ["test"] * 1_000))
    settings = RunSettings(device="cpu")
    assert settings.head == "auto"
    chosen, why = choose_head(settings, large)
    assert (chosen.head, chosen.backbone) == ("finetune", "efficientnet_lite0:cut=1")
    assert "took 0.70 ms per image on this machine just now, within the 0.75" in why
    chosen, why = choose_head(settings, small)
    assert chosen.head == "tuned" and "99 validation images are too few" in why
    chosen, why = choose_head(settings, fewer)
    assert chosen.head == "tuned" and "9,999 labelled images (train and validation) are fewer than the 10,000" in why
    assert choose_head(settings.but(backbone="efficientnet_lite1"), large)[0].head == "tuned"
    assert choose_head(settings.but(precision="fp32"), large)[0].head == "tuned"
    assert choose_head(settings.but(flip=True), large)[0].head == "tuned"
    assert choose_head(settings.but(head="mlp"), large) == (settings.but(head="mlp"), None)  # a head given is kept
    with pytest.raises(CnnCodesError, match="this run does not fine-tune: 99 validation images"):
        choose_head(settings.but(finetune_epochs=3), small)
    assert steps == ["efficientnet_lite0:cut=1"]
    monkeypatch.setattr(finetune, "step_seconds_per_image", lambda backbone, precision: 0.8e-3)
    chosen, why = choose_head(settings, large)
    assert chosen.head == "tuned" and "0.80 ms per image on this machine just now, more than the 0.75" in why
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    chosen, why = choose_head(settings, large)
    assert chosen.head == "tuned" and "does not multiply bf16 natively" in why

"""Class activation maps: exact (they add up to the head's logits) and where the object is."""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnncodes import CnnCodesError
from cnncodes.explain import Explainer, write_explanations
from cnncodes.predict import Predictor

from .conftest import cli, make_image

CLASSES = ["discs", "bars", "checkers"]
pytestmark = pytest.mark.slow  # maps come from the fp32 network whatever the precision: once, not again in fp32


def one_object(kind: int, quadrant: int, rng) -> np.ndarray:
    """A 128 x 128 dark picture with one 64 x 64 synthetic object in the given quadrant (0 top left ... 3)."""
    img = np.full((128, 128, 3), 30, np.uint8)
    r, c = divmod(quadrant, 2)
    img[r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] = make_image(kind, rng, 64)
    return img


@pytest.fixture(scope="module")
def fp32_run(tiny_folder, tmp_path_factory):
    """A run whose head learned from fp32 codes. Where the CPU computes bf16, the default run's head learns from bf16
    codes of these 60 synthetic pictures, and it weighs the object's evidence less sharply (its maps found the object's
    quadrant in 7 of 12 pictures on an Intel Xeon with AMX); the maps are exact for either head (the test above)."""
    out = tmp_path_factory.mktemp("fp32_run")
    result = cli("run", "--data", tiny_folder, "--out", out, "--no-report", "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    return out


def quadrant_pictures():
    rng = np.random.default_rng(5)
    return [(kind, quadrant, one_object(kind, quadrant, rng)) for kind in range(3) for quadrant in range(4)]


def test_the_map_adds_up_to_the_logits(tiny_run):
    """Exact for the default run's head, whatever precision its codes were computed in."""
    predictor = Predictor(tiny_run)
    explainer = Explainer.of(predictor)
    for _, _, img in quadrant_pictures():
        _, logits = explainer.maps(img)  # the mean of the per-position terms, plus the intercept
        with torch.no_grad():
            code = explainer.model(torch.from_numpy(explainer.spec.preprocess(img)[None])).numpy()
        np.testing.assert_allclose(logits, predictor.head.decision_function(code)[0], rtol=1e-4, atol=1e-3)


def test_a_fine_tuned_map_adds_up_to_its_logits(tiny_folder):
    """The fine-tuned top's own last feature map, averaged into its classifier: exact too."""
    from cnncodes import extract_codes
    from cnncodes.data.datasets import load_dataset
    from cnncodes.heads.finetune import FineTuneHead

    cut = "efficientnet_lite0:cut=1"
    codes = extract_codes(load_dataset(tiny_folder), cut, precision="fp32", progress=False)
    head = FineTuneHead(cut, epochs=1, batch_size=16, precision="fp32").fit(*codes.part("train"), n_classes=3)
    explainer = Explainer(cut, head)
    for _, _, img in quadrant_pictures()[:4]:
        _, logits = explainer.maps(img)
        with torch.no_grad():
            maps = explainer.model(torch.from_numpy(explainer.spec.preprocess(img)[None])).numpy()
        np.testing.assert_allclose(logits, head.decision_function(maps)[0], rtol=1e-4, atol=1e-3)


def test_the_map_finds_the_object(fp32_run):
    predictor = Predictor(fp32_run)
    explainer = Explainer.of(predictor)
    found = 0
    for kind, quadrant, img in quadrant_pictures():
        terms, _ = explainer.maps(img)
        heat = np.kron(terms[..., predictor.class_names.index(CLASSES[kind])], np.ones((2, 2)))  # 7x7 -> 14x14
        n = len(heat) // 2
        quadrants = [heat[:n, :n].mean(), heat[:n, n:].mean(), heat[n:, :n].mean(), heat[n:, n:].mean()]
        found += int(np.argmax(quadrants)) == quadrant
    assert found >= 9, f"the object's quadrant was the map's hottest in only {found} of 12 pictures (chance: 3)"


def test_predict_explain_writes_heatmaps_and_says_what_is_unsupported(tiny_run, tmp_path, tiny_folder):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(one_object(0, 1, np.random.default_rng(0))).save(photos / "wide.png")
    (photos / "sub").mkdir()
    for twin in (photos / "sub" / "wide.png", photos / "wide.2.png"):  # names whose heatmaps would clash
        twin.write_bytes((photos / "wide.png").read_bytes())
    Image.fromarray(np.zeros((300, 500, 3), np.uint8)).save(photos / "black.jpg")
    (photos / "broken.jpg").write_bytes(b"not an image")
    result = cli("predict", tiny_run, photos, "--explain", tmp_path / "maps")
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "maps").glob("*.jpg"))
    assert len(written) == 4 and all(w.startswith("wide.") for w in written[1:]) and "1 images skipped" in result.stdout
    assert Image.open(tmp_path / "maps" / written[0]).size == (448, 269)  # the photo's shape, longer side 448
    with open(tmp_path / "maps" / "heatmaps.csv", newline="") as f:  # which heatmap is whose
        index = {Path(row["image"]).relative_to(photos).as_posix(): row for row in csv.DictReader(f)}
    assert sorted(row["heatmap"] for row in index.values() if row["heatmap"]) == written
    assert index["broken.jpg"]["heatmap"] == "" and index["broken.jpg"]["error"]
    twins = {index[name]["heatmap"] for name in ("wide.png", "sub/wide.png", "wide.2.png")}
    assert len(twins) == 3 and all(index[n]["heatmap"].endswith(f".{index[n]['class_mapped']}.jpg") or
                                   index[n]["unknown"] == "1" for n in index if index[n]["heatmap"])
    predictor = Predictor(tiny_run)
    unknown = write_explanations(Explainer.of(predictor), [photos / "wide.png"], predictor.class_names,
                                 tmp_path / "maps3", [predictor.class_names[0]], [True])
    assert unknown[0].name == f"wide.unknown-nearest-{predictor.class_names[0]}.jpg"  # not a known class's name
    mlp = tmp_path / "mlp"
    assert cli("train", "--data", tiny_folder, "--head", "mlp", "--out", mlp).returncode == 0
    refused = cli("predict", mlp, photos / "wide.png", "--explain", tmp_path / "maps2")
    assert refused.returncode != 0 and "linear head" in refused.stderr and "'mlp'" in refused.stderr
    with pytest.raises(CnnCodesError, match="backbone is 'inception_v3_2015'"):
        Explainer("inception_v3_2015", Predictor(tiny_run).head)


def test_the_report_shows_maps_over_its_mistakes(tiny_folder, tmp_path):
    """Every test image called wrong on purpose: the run's mistake maps are those of the (wrong) predicted class,
    and the rebuilt report draws them."""


    from cnncodes import image_folder
    from cnncodes.explain import write_mistake_maps

    run = tmp_path / "run"
    assert cli("run", "--data", tiny_folder, "--out", run).returncode == 0
    predictor, dataset = Predictor(run), image_folder(tiny_folder)
    test = np.flatnonzero(dataset.splits == "test")
    labels = dataset.labels[test]
    proba = np.eye(3)[(labels + 1) % 3]
    assert write_mistake_maps(run, dataset, predictor.head, predictor.backbone, np.asarray(dataset.ids)[test], labels, proba)
    with np.load(run / "mistake_maps.npz") as maps:
        first = dataset.row_of()[str(maps["ids"][0])]
        assert len(maps["ids"]) == min(18, len(test)) and maps["images"].shape[1:] == (192, 192, 3)
        wrong = int((dataset.labels[first] + 1) % 3)
        expected = np.asarray(Explainer.of(predictor).overlay(dataset.read(first), wrong)[0].resize((192, 192)))
        np.testing.assert_array_equal(maps["images"][0], expected)
    assert cli("report", run).returncode == 0
    assert (run / "mistake_maps.png").exists() and 'src="mistake_maps.png"' in (run / "report.html").read_text()

"""`cnncodes export` and the ONNX runtimes: the exported file predicts what model.npz predicts, runs with ONNX
Runtime, numpy and Pillow alone (the README's snippet), and ONNX Runtime codes are the torch codes."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnncodes import CnnCodesError
from cnncodes.pipeline import run_experiment
from cnncodes.predict import Prediction, list_images, predict_images
from cnncodes.settings import RunSettings

from .conftest import cli

pytest.importorskip("onnxruntime")
SNIPPET = Path(__file__).resolve().parents[1] / "docs" / "onnx_predict.py"


@pytest.fixture(scope="module")
def flip_run(tiny_folder, tmp_path_factory):
    """A run whose model averages an image and its mirror image: the graph must do the same."""
    out = tmp_path_factory.mktemp("flip_run")
    run_experiment(RunSettings(data=str(tiny_folder), flip=True, normalize="sqrt", precision="fp32"),
                   out, report=False, progress=False)
    return out


def test_head_modules_compute_the_heads_logits():
    from cnncodes.heads import make_head

    import torch

    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, 1.0, (300, 24)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    for mode, normalize in (("tuned", "none"), ("tuned", "sqrt"), ("mlp", "l2"), ("sgd", "none")):
        head = make_head(mode, normalize=normalize).fit(x[:200], y[:200], x[200:], y[200:])
        with torch.no_grad():
            logits = head.torch_module()(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(logits, head.decision_function(x), atol=1e-4, err_msg=f"{mode} {normalize}")


@pytest.mark.slow  # precision-independent ONNX graphs: once, not again in the fp32 pass
def test_exported_model_agrees_with_the_model_file_on_every_test_image(flip_run, tiny_folder, tmp_path):
    from cnncodes.export import OnnxModel, export_model
    from cnncodes.heads.model_file import load_model_file

    result = cli("export", flip_run, "--out", tmp_path / "model.onnx")
    assert result.returncode == 0, result.stderr
    int8_codes = load_model_file(flip_run / "model.npz")[1]["settings"]["runtime"] == "onnx-int8"
    assert ("--int8 exports the network the run used" in result.stdout) == int8_codes, result.stdout
    test_images = [Path(tiny_folder) / i for i in np.load(flip_run / "test_predictions.npz")["ids"]]
    assert len(test_images) >= 5
    # a phone photo (EXIF says: rotate 90 degrees; the pixels alone lie on their side) and a transparent PNG
    from PIL import Image

    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).resize((800, 600))
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(tmp_path / "phone.jpg", quality=90, exif=exif)
    rgba = np.dstack([np.asarray(Image.open(test_images[0]).convert("RGB")), np.tile([0, 255], (32, 16)).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    test_images += [tmp_path / "phone.jpg", tmp_path / "transparent.png"]
    ours = predict_images(flip_run / "model.npz", test_images, top_k=3, precision="fp32")
    exported = predict_images(tmp_path / "model.onnx", test_images, top_k=3)
    for a, b in zip(ours, exported):
        assert [name for name, _ in a.top] == [name for name, _ in b.top]
        np.testing.assert_allclose([p for _, p in a.top], [p for _, p in b.top], atol=1e-3)
        # the "none of these" detector travels in the file: the same score from the image's own codes and logits
        assert a.unknown_score is not None and abs(a.unknown_score - b.unknown_score) < 1e-2 and a.unknown == b.unknown
    assert any(a.unknown for a in ours) and not all(a.unknown for a in ours)  # the noise photo, not the discs
    model = OnnxModel(tmp_path / "model.onnx")
    assert model.class_names == ["bars", "checkers", "discs"] and model.recipe["flip_average"]
    assert model.threshold == pytest.approx(load_model_file(flip_run / "model.npz")[0].unknown_.threshold)
    without = export_model(flip_run, tmp_path / "plain.onnx", unknown=False)
    assert OnnxModel(without).threshold is None and without.stat().st_size < (tmp_path / "model.onnx").stat().st_size
    assert predict_images(without, test_images[:2])[0].unknown_score is None

    # the README's snippet: ONNX Runtime, numpy and Pillow, no cnncodes
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "phone.jpg").read_bytes()[:5000])  # truncated
    run = subprocess.run([sys.executable, str(SNIPPET), str(tmp_path / "model.onnx"), *map(str, test_images),
                          str(tmp_path / "notes.txt"), str(tmp_path / "cut.jpg")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert "notes.txt error" in run.stderr and "cut.jpg error" in run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == len(ours)
    for line, top in zip(lines, ours):  # "path class p" or "path unknown score S > T; nearest class p"
        words = line.split(" ")
        assert (words[1] == "unknown") == top.unknown, line
        assert words[-2] == top.top[0][0] and abs(float(words[-1]) - top.top[0][1]) < 2e-3, line
        if top.unknown:
            assert abs(float(words[3]) - top.unknown_score) < 1e-2, line


@pytest.mark.slow  # precision-independent ONNX graphs: once, not again in the fp32 pass
def test_int8_export_keeps_the_predictions_and_is_smaller(flip_run, tiny_folder, tmp_path):
    from cnncodes.export import OnnxModel, export_model

    fp32 = export_model(flip_run, tmp_path / "fp32.onnx")
    int8 = export_model(flip_run, tmp_path / "int8.onnx", int8=True)
    # Lite0's 3.4 M weights take 13.6 MB as float32 and a quarter of that as int8; the head stays float
    assert fp32.stat().st_size - int8.stat().st_size > 8e6
    # the run's unknown detector knows its fp32 codes, not int8 ones: the int8 file of this run goes without it
    assert OnnxModel(fp32).threshold is not None and OnnxModel(int8).threshold is None
    images = list_images([tiny_folder])
    top = [[r.top[0][0] for r in predict_images(path, images, top_k=1)] for path in (fp32, int8)]
    assert np.mean(np.array(top[0]) == np.array(top[1])) >= 0.95

    # prediction from the file, and extraction on ONNX Runtime with its graphs in the cache, never import PyTorch
    # (its import was most of a command's fixed time)
    code = ("import sys; from cnncodes.predict import predict_images; from cnncodes.data.datasets import load_dataset; "
            "from cnncodes.codes.extract import extract_codes; "
            f"assert predict_images({str(int8)!r}, {[str(i) for i in images[:3]]!r}); "
            f"extract_codes(load_dataset({str(tiny_folder)!r}), runtime='onnx-int8', progress=False); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


@pytest.mark.slow  # ONNX graphs and precision named: once, not again in the fp32 pass
def test_onnx_runtime_codes_match_torch_codes_and_have_their_own_store(tiny_folder):
    from cnncodes.data.datasets import load_dataset
    from cnncodes.codes.extract import extract_codes

    ds = load_dataset(str(tiny_folder))
    codes = {rt: extract_codes(ds, runtime=rt, precision="fp32", progress=False) for rt in ("torch", "onnx", "onnx-int8")}
    stores = {rt: Path(c.vectors.sources[0].path).parent for rt, c in codes.items()}
    assert len(set(stores.values())) == 3 and all(f"-{rt}-" in stores[rt].name for rt in stores)  # one each
    np.testing.assert_allclose(codes["onnx"].vectors, codes["torch"].vectors, rtol=1e-3, atol=1e-3)
    a, b = np.asarray(codes["onnx-int8"].vectors), np.asarray(codes["torch"].vectors)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    # quantised, and close (median 0.93 on these synthetic images, AMD EPYC with AVX2, onnxruntime 1.32)
    assert np.median(cosine) > 0.85 and not np.allclose(a, b, atol=1e-3)


def test_the_onnx_runtimes_say_what_to_install_when_onnx_runtime_is_missing(monkeypatch):
    import importlib.util

    from cnncodes.codes.onnx_graphs import check_runtime

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    with pytest.raises(CnnCodesError, match=r"pip install 'cnncodes\[onnx\]'"):
        check_runtime("onnx-int8")
    assert check_runtime("torch") == "torch"


def test_the_auto_runtime_is_int8_with_vnni_torch_with_bf16_or_a_gpu_and_onnx_elsewhere(monkeypatch):
    import importlib.util

    from cnncodes.codes import runtime
    from cnncodes.settings import RunSettings

    monkeypatch.delenv(runtime.PRECISION_ENV, raising=False)
    monkeypatch.delenv(runtime.RUNTIME_ENV, raising=False)
    monkeypatch.setattr(runtime, "cpu_has_vnni", lambda: False)
    assert runtime.resolve_runtime("auto", "cpu", "bf16") == "torch"
    assert runtime.resolve_runtime("auto", "cpu", "fp32") == "onnx"
    assert runtime.resolve_runtime("onnx-int8", "cpu", "bf16") == "onnx-int8"  # a runtime named is kept
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    assert runtime.resolve_runtime("auto", "cpu", "auto") == "onnx"
    # what a run records is the runtime decided, so its model computes codes the same way on any later machine
    assert RunSettings(device="cpu").resolved().runtime == "onnx"
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert RunSettings(device="cpu").resolved().runtime == "torch"
    monkeypatch.setattr(runtime, "cpu_has_vnni", lambda: True)  # int8 kernels: whatever the CPU does with bf16
    assert RunSettings(device="cpu").resolved().runtime == "onnx-int8"
    assert runtime.resolve_runtime("auto", "cpu", "fp32") == "onnx"  # a float precision asked for: float codes
    assert runtime.resolve_runtime("auto", "cpu", "bf16") == "torch"
    assert RunSettings.from_dict({"backbone": "efficientnet_lite0"}).runtime == "torch"  # a run recorded before auto
    monkeypatch.setenv(runtime.PRECISION_ENV, "fp32")  # fp32 forced machine-wide: ONNX Runtime's fp32 is faster
    assert runtime.resolve_runtime("auto", "cpu", "auto") == "onnx"
    monkeypatch.setenv(runtime.RUNTIME_ENV, "onnx-int8")  # a machine-wide choice of runtime
    assert runtime.resolve_runtime("auto", "cpu", "auto") == "onnx-int8"
    monkeypatch.delenv(runtime.RUNTIME_ENV)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    assert runtime.resolve_runtime("auto", "cpu", "fp32") == "torch"  # not installed: torch, no error
    monkeypatch.delenv(runtime.PRECISION_ENV)
    assert runtime.resolve_runtime("auto", "cpu", "auto") == "torch"


@pytest.mark.slow  # precision-independent ONNX graphs: once, not again in the fp32 pass
def test_pixel_graphs_give_the_network_graphs_codes_bit_for_bit(tiny_folder):
    """Extraction feeds uint8 windows to graphs that normalise (or, int8, take the pixels as their quantised input):
    the codes must be the very numbers of the normalised float batch (int8: up to the CPU's int8 kernels)."""
    from cnncodes.backbones import get_backbone
    from cnncodes.data.cifar10 import default_cache_dir
    from cnncodes.data.datasets import load_dataset
    from cnncodes.codes.extract import Calibration
    from cnncodes.codes.onnx_graphs import Session, _maps_pixels_to_themselves, codes_graph

    ds = load_dataset(str(tiny_folder))
    spec = get_backbone("efficientnet_lite0")
    windows = np.stack([spec.preprocess.window(ds.read(i)) for i in range(0, len(ds), 5)])
    assert windows.dtype == np.uint8
    for runtime in ("onnx", "onnx-int8"):
        pixels = codes_graph(spec, runtime, default_cache_dir(), Calibration(ds, spec))
        network = pixels.with_name(pixels.name.split("-pixels-")[0] + ".onnx")
        a, b = Session(pixels)(windows), Session(network)(spec.preprocess.network_input(windows))
        if runtime == "onnx":
            np.testing.assert_array_equal(a, b)
        else:  # bit for bit where ONNX Runtime's int8 kernels are (CPUs with VNNI); within rounding elsewhere
            cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            assert cosine.min() > 0.998, cosine.min()
    assert _maps_pixels_to_themselves(127.0, 128.0, np.float32(1 / 128), np.uint8(127))
    assert not _maps_pixels_to_themselves(127.0, 128.0, np.float32(1.01 / 128), np.uint8(127))
    assert not _maps_pixels_to_themselves(127.0, 128.0, np.float32(1 / 128), np.uint8(128))


@pytest.mark.slow  # precision-independent ONNX graphs: once, not again in the fp32 pass
@pytest.mark.parametrize("runtime", ["onnx-int8", "onnx"])
def test_onnx_codes_do_not_depend_on_how_the_work_is_split(tiny_folder, tmp_path, runtime):
    """ONNX Runtime runs as concurrent one-threaded runs of a few images, fed by workers that decode their own
    batches, or, for fewer images than cores, as one run whose operators use every core: the codes, their order and
    the skip reasons must be those of one image per one-threaded run, whatever the batch size and the number of
    workers."""
    import shutil

    from cnncodes.backbones import get_backbone
    from cnncodes.data.cifar10 import default_cache_dir
    from cnncodes.data.datasets import load_dataset
    from cnncodes.codes.extract import Calibration
    from cnncodes.codes.inference import encode, prepare
    from cnncodes.codes.onnx_graphs import Session, codes_graph

    folder = tmp_path / "data"
    shutil.copytree(tiny_folder, folder)
    (folder / "bars" / "007.png").write_bytes(b"not an image")
    ds = load_dataset(str(folder))
    spec = get_backbone("efficientnet_lite0")
    session = Session(codes_graph(spec, runtime, default_cache_dir(), Calibration(ds, spec)), threads=3)
    items = [prepare(ds.read, i, spec) for i in range(len(ds))]
    broken = [i for i, item in enumerate(items) if isinstance(item, str)]
    assert len(broken) == 1
    one_by_one = np.stack([session.with_threads(1)(item[None])[0] if not isinstance(item, str) else
                           np.zeros(spec.feature_dim, np.float32) for item in items])
    np.testing.assert_array_equal(session(np.stack([i for i in items if not isinstance(i, str)])),
                                  np.delete(one_by_one, broken, axis=0))
    for batch_size, threads in ((64, 1), (5, 3), (1, 2)):
        parts = list(encode(ds.read, range(len(ds)), spec, session, device="cpu", precision="fp32",
                            batch_size=batch_size, threads=threads))
        assert [i for chunk, _, _ in parts for i in chunk] == list(range(len(ds)))
        np.testing.assert_array_equal(np.concatenate([codes for _, codes, _ in parts]), one_by_one)
        assert {i: why for _, _, bad in parts for i, why in bad.items()} == {broken[0]: items[broken[0]]}
    for few in ([0], [broken[0] - 1, broken[0]], [0, 1, 2]):  # fewer images than the 4 cores: operators spread
        parts = list(encode(ds.read, few, spec, session, device="cpu", precision="fp32", batch_size=64, threads=4))
        assert len(parts) == 1 and list(parts[0][0]) == few and set(parts[0][2]) == set(few) & set(broken)
        np.testing.assert_array_equal(parts[0][1], one_by_one[few])
    assert session._spread[4] is not None  # the spread session ran them
    changed = tmp_path / "changed.onnx"  # a graph file rewritten after it was loaded is not read again
    shutil.copy(session.graph, changed)
    reloaded = Session(changed, threads=4)
    os.utime(changed, ns=(0, 0))
    np.testing.assert_array_equal(reloaded(items[0][None]), one_by_one[:1])
    assert reloaded._spread[4] is None


@pytest.mark.slow  # precision-independent ONNX graphs: once, not again in the fp32 pass
def test_predict_with_an_int8_run_uses_its_int8_codes(tiny_folder, tmp_path):
    settings = RunSettings(data=str(tiny_folder), runtime="onnx-int8")
    run_experiment(settings, tmp_path, report=False, progress=False)
    images = list_images([tiny_folder])[:6]
    from cnncodes.codes.extract import codes_graphs

    graphs = codes_graphs(settings)
    assert [p.name.split("-")[1] for p in graphs.values()] == ["int8"]
    assert all(isinstance(r, Prediction) for r in predict_images(tmp_path / "model.npz", images))


@pytest.mark.slow  # precision-independent ONNX graphs: once, not again in the fp32 pass
def test_export_refuses_what_it_cannot_export(tiny_folder, tmp_path):
    from cnncodes.export import OnnxModel, export_model

    run_experiment(RunSettings(data=str(tiny_folder), backbone="efficientnet_lite0+efficientnet_lite1", runtime="torch"),
                   tmp_path / "two", report=False, progress=False)  # torch: no ONNX graph of Lite1 to build first
    with pytest.raises(CnnCodesError, match="one backbone"):
        export_model(tmp_path / "two", tmp_path / "two.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(CnnCodesError, match="not an ONNX model"):
        OnnxModel(tmp_path / "junk.onnx")
    result = cli("extract", "--data", tiny_folder, "--out", tmp_path / "x", "--runtime", "tensorrt")
    assert result.returncode == 2 and "--runtime" in result.stderr


@pytest.mark.slow  # precision-independent ONNX graphs: once, not again in the fp32 pass
def test_a_collection_keeps_its_int8_graph_while_it_holds_the_calibration_images(tiny_folder, tmp_path):
    """Half again as many images (new ones among the smallest keys, which a calibration would now take): the graph
    stays, so no old code changes; a collection without most of those images gets a graph of its own."""
    import shutil

    from PIL import Image

    from cnncodes.backbones import get_backbone
    from cnncodes.codes.extract import Calibration
    from cnncodes.codes.onnx_graphs import codes_graph
    from cnncodes.data.datasets import load_dataset

    from .conftest import make_image, write_image_folder

    spec, cache = get_backbone("efficientnet_lite0"), tmp_path / "cache"
    grown = tmp_path / "grown"
    shutil.copytree(tiny_folder, grown)
    rng = np.random.default_rng(11)
    for n in range(30):
        Image.fromarray(make_image(n % 3, rng)).save(grown / ["discs", "bars", "checkers"][n % 3] / f"new{n}.png")
    first, later = (Calibration(load_dataset(str(folder)), spec, n=16) for folder in (tiny_folder, grown))
    assert len(set(first.keys) & set(later.keys)) < 0.9 * 16  # what a calibration now would take has changed
    graph = codes_graph(spec, "onnx-int8", cache, first)
    assert codes_graph(spec, "onnx-int8", cache, later) == graph
    other = Calibration(load_dataset(str(write_image_folder(tmp_path / "other", 10, seed=3))), spec, n=16)
    assert codes_graph(spec, "onnx-int8", cache, other) != graph


def test_int8_ranges_do_not_depend_on_the_calibration_batch_size(tmp_path):
    """Calibration runs in small batches (the activations of a large one took gigabytes): the minimum and maximum of
    each tensor over all calibration images, so the int8 graph is the one larger batches give."""
    import onnx
    import torch

    from cnncodes.codes import onnx_graphs

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    onnx_graphs.write_onnx(net, torch.zeros(2, 3, 16, 16), tmp_path / "net.onnx", "x", "codes")
    images = np.concatenate([np.random.default_rng(k).normal(0, s, (4, 3, 16, 16)) for k, s in enumerate((0.5, 3, 1))])
    graphs = []
    for batch in (12, 4, 1):
        batches = (images[i:i + batch].astype(np.float32) for i in range(0, len(images), batch))
        onnx_graphs.quantize_int8(tmp_path / "net.onnx", tmp_path / f"{batch}.onnx", batches, "x")
        graph = onnx.load(str(tmp_path / f"{batch}.onnx")).graph
        graphs.append({t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer})
    assert any(name.endswith("_scale") for name in graphs[0])
    for other in graphs[1:]:
        assert other.keys() == graphs[0].keys()
        for name, value in graphs[0].items():
            np.testing.assert_array_equal(other[name], value, err_msg=name)

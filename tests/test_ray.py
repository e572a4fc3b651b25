"""The Ray engine writes the very codes the local engine writes, into the same store."""
import os
import shutil
import sys

import numpy as np
import pytest

from cnncodes import extract_codes, image_folder

from .conftest import write_image_folder

pytestmark = pytest.mark.usefixtures("torch_runtime")  # about the engines, not the runtime


@pytest.fixture(autouse=True, scope="module")
def _one_ray():
    """One local Ray for the module (each start takes seconds), stopped after its last test."""
    yield
    if "ray" in sys.modules:
        sys.modules["ray"].shutdown()


def ray_or_skip():
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but ray is not installed (scripts/setup.sh installs cnncodes[ray])")
        pytest.skip("ray not installed: pip install 'cnncodes[ray]'")


@pytest.fixture(scope="module")
def three_hundred(tmp_path_factory):
    root = write_image_folder(tmp_path_factory.mktemp("ray-data") / "data", 100, seed=1)
    (root / "bars" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


@pytest.mark.slow
def test_ray_and_local_engines_give_the_same_codes_and_share_the_store(three_hundred, tmp_path):
    ray_or_skip()

    ds = image_folder(three_hundred)
    via_ray = extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path / "a", engine="ray", progress=False)
    rows = sorted((tmp_path / "a").glob("stores/*/rows.bin"))
    stamps = {p: p.stat().st_mtime_ns for p in rows}
    reused = extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path / "a", progress=False)
    assert stamps == {p: p.stat().st_mtime_ns for p in rows}, "the local engine recomputed Ray's codes"
    local = extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path / "b", progress=False)
    assert list(via_ray.ids) == list(local.ids) == list(reused.ids)
    np.testing.assert_allclose(via_ray.vectors, local.vectors, atol=2e-2)
    assert dict(via_ray.skipped).keys() == dict(local.skipped).keys() == {"bars/broken.png"}
    same_names = {p.name for p in (tmp_path / "a").glob("stores/*")} == {p.name for p in (tmp_path / "b").glob("stores/*")}
    assert same_names  # one extraction identity, whichever engine ran
    shutil.rmtree(tmp_path)


@pytest.mark.slow
def test_ray_reads_items_with_the_datasets_own_reader(three_hundred, tmp_path):
    """A dataset whose reader is not "decode the file at its path" (here: colours inverted in memory) gives the
    same codes on both engines: the actors call the dataset's reader, as the local engine does."""
    ray_or_skip()

    from cnncodes.data.images import load_rgb

    folder = image_folder(three_hundred)
    ds = folder.subset(range(0, 300, 5))
    ds.keys = ["inverted:" + k for k in ds.keys]  # what the reader returns is other content than the files
    ds.reader = lambda i, min_side=None, _read=ds.reader: 255 - _read(i, min_side)
    via_ray = extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path / "a", engine="ray", progress=False)
    local = extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path / "b", progress=False)
    from_files = extract_codes(folder.subset(range(0, 300, 5)), "efficientnet_lite0", cache_dir=tmp_path / "c",
                               progress=False)
    assert np.array_equal(ds.read(0), 255 - load_rgb(ds.path(0)))
    np.testing.assert_allclose(via_ray.vectors, local.vectors, atol=2e-2)
    assert np.abs(np.asarray(via_ray.vectors) - np.asarray(from_files.vectors)).max() > 0.5  # the reader, not the file path, was used


@pytest.mark.slow
def test_ray_actors_run_the_int8_graph_extraction_runs(three_hundred):
    """--engine ray --runtime onnx-int8: each actor runs the pixel graph it is shipped (as bytes) and gives the codes
    of the same graph run here, bit for bit."""
    ray_or_skip()

    from cnncodes.backbones import get_backbone
    from cnncodes.data.cifar10 import default_cache_dir
    from cnncodes.codes.extract import Calibration
    from cnncodes.codes.inference import prepare
    from cnncodes.codes.onnx_graphs import Session, codes_graph

    ds = image_folder(three_hundred).subset(range(0, 300, 10))
    via_ray = extract_codes(ds, "efficientnet_lite0", runtime="onnx-int8", engine="ray", progress=False)
    spec = get_backbone("efficientnet_lite0")
    session = Session(codes_graph(spec, "onnx-int8", default_cache_dir(), Calibration(ds, spec)), threads=1)
    assert session.threads == 1
    windows = [prepare(ds.read, i, spec) for i in range(len(ds))]
    np.testing.assert_array_equal(via_ray.vectors, session(np.stack([w for w in windows if not isinstance(w, str)])))


def test_engine_ray_without_ray_says_how_to_install(monkeypatch, three_hundred, tmp_path):
    import builtins

    from cnncodes import CnnCodesError

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(CnnCodesError, match=r"pip install 'cnncodes\[ray\]'"):
        extract_codes(image_folder(three_hundred), "efficientnet_lite0", cache_dir=tmp_path, engine="ray",
                      progress=False)


def test_ray_places_one_actor_per_gpu_and_one_per_two_cpus():
    from cnncodes.codes.engines.ray import actor_plan

    assert actor_plan(cpus=16, gpus=2, gpu=True, concurrency=None) == (2, 8)
    assert actor_plan(cpus=16, gpus=0, gpu=False, concurrency=None) == (8, 2)
    assert actor_plan(cpus=2, gpus=0, gpu=False, concurrency=None) == (1, 2)
    assert actor_plan(cpus=8, gpus=1, gpu=True, concurrency=3) == (3, 2)

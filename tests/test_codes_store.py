"""The content-addressed store: edits cost only what they add; codes survive interruption, damage and changed
settings; resumed codes equal uninterrupted ones."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnncodes import CnnCodesError, extract_codes, image_folder
from cnncodes.codes.view import Codes
from cnncodes.data.datasets import manifest

from .conftest import make_image


def stores(cache: Path) -> list[Path]:
    return sorted(cache.glob("stores/*/"))


def stored_images(cache: Path) -> int:
    """Images whose codes (or skip reasons) the cache's stores hold; a store still being created holds none."""
    import sqlite3
    from contextlib import closing

    total = 0
    for store in stores(cache):
        try:
            with closing(sqlite3.connect(f"file:{store / 'index.sqlite'}?mode=ro", uri=True)) as db:
                total += db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        except sqlite3.OperationalError:  # the index file or its table is not made yet
            pass
    return total


pytestmark = pytest.mark.usefixtures("torch_runtime")  # about the store, not the runtime


def extract(data, cache, **options):
    return extract_codes(image_folder(data, cache_dir=cache), "efficientnet_lite0", cache_dir=cache, progress=False,
                         **options)


@pytest.fixture(scope="module")
def reference(tiny_folder, tmp_path_factory):
    return extract(tiny_folder, tmp_path_factory.mktemp("ref-cache"))


def test_second_run_reuses_the_cache(tiny_folder, tmp_path, reference):
    first = extract(tiny_folder, tmp_path)
    rows = stores(tmp_path)[0] / "rows.bin"
    stamp = rows.stat().st_mtime_ns
    again = extract(tiny_folder, tmp_path)
    assert rows.stat().st_mtime_ns == stamp and stored_images(tmp_path) == 60
    np.testing.assert_array_equal(first.vectors, again.vectors)
    np.testing.assert_allclose(first.vectors, reference.vectors, atol=1e-6)


def test_edits_compute_only_what_they_add(tiny_folder, tmp_path, reference):
    """Relabel (move to another class folder), rename, delete, duplicate: nothing computed; add two: two computed.
    Codes of untouched images stay bit-identical, and no image changes split."""
    data = tmp_path / "data"
    shutil.copytree(tiny_folder, data)
    before = extract(data, tmp_path / "cache")
    rows = stores(tmp_path / "cache")[0] / "rows.bin"
    size = rows.stat().st_size
    (data / "bars" / "000.png").rename(data / "discs" / "000.png")  # a relabel
    (data / "bars" / "001.png").rename(data / "bars" / "renamed.png")
    (data / "checkers" / "002.png").unlink()
    shutil.copy(data / "checkers" / "003.png", data / "discs" / "copy-of-003.png")  # the same content twice
    after = extract(data, tmp_path / "cache")
    assert rows.stat().st_size == size and stored_images(tmp_path / "cache") == 60, "an edit recomputed codes"
    was = {"discs/000.png": "bars/000.png", "bars/renamed.png": "bars/001.png", "discs/copy-of-003.png": "checkers/003.png"}
    old = dict(zip(before.ids, np.asarray(before.vectors)))
    for item_id, code in zip(after.ids, np.asarray(after.vectors)):
        np.testing.assert_array_equal(code, old[was.get(item_id, item_id)])
    split = dict(zip(before.ids, before.splits))
    assert all(split[was.get(i, i)] == s for i, s in zip(after.ids, after.splits))
    moved = list(after.ids).index("discs/000.png")
    assert after.class_names[after.labels[moved]] == "discs"
    rng = np.random.default_rng(5)
    for k in range(2):
        Image.fromarray(make_image(0, rng)).save(data / "discs" / f"new{k}.png")
    extract(data, tmp_path / "cache")
    assert stored_images(tmp_path / "cache") == 62 and rows.stat().st_size == size + 2 * 1280 * 4


def test_the_same_image_in_two_collections_is_computed_once(tiny_folder, tmp_path):
    extract(tiny_folder, tmp_path / "cache")
    other = tmp_path / "other"
    shutil.copytree(tiny_folder / "discs", other / "round")
    shutil.copytree(tiny_folder / "bars", other / "striped")
    extract(other, tmp_path / "cache")
    assert stored_images(tmp_path / "cache") == 60


def test_an_unchanged_file_is_not_read_again(tiny_folder, tmp_path, monkeypatch):
    """The stat memo recognises unchanged files; a changed file is hashed again and gets new codes."""
    from cnncodes.data import content

    data = tmp_path / "data"
    shutil.copytree(tiny_folder, data)
    time.sleep(content.MEMO_MARGIN_NS / 1e9)  # a file changed just before it is hashed is hashed again next time
    image_folder(data, cache_dir=tmp_path)
    hashed = []
    monkeypatch.setattr(content, "file_key", lambda path, _f=content.file_key: hashed.append(path) or _f(path))
    image_folder(data, cache_dir=tmp_path)
    assert hashed == []
    img = data / "bars" / "000.png"
    Image.new("RGB", (32, 32), (1, 1, 1)).save(img)
    ds = image_folder(data, cache_dir=tmp_path)
    assert [Path(p) for p in hashed] == [img]
    assert ds.keys[ds.ids.index("bars/000.png")] == content.file_key(img)


def test_damaged_rows_are_recomputed_not_loaded(tiny_folder, tmp_path, reference):
    extract(tiny_folder, tmp_path)
    rows = stores(tmp_path)[0] / "rows.bin"
    raw = bytearray(rows.read_bytes())
    raw[(2 * 8 + 3) * 1280 * 4 + 17] ^= 0xFF  # one byte of row 19
    rows.write_bytes(bytes(raw))
    again = extract(tiny_folder, tmp_path)
    assert len(rows.read_bytes()) == len(raw) + 1280 * 4  # the damaged image computed again, into a new row
    np.testing.assert_allclose(again.vectors, reference.vectors, atol=1e-6)


def test_a_store_of_another_identity_is_refused_not_mixed(tiny_folder, tmp_path):
    extract(tiny_folder, tmp_path)
    identity = stores(tmp_path)[0] / "identity.json"
    values = json.loads(identity.read_text())
    identity.write_text(json.dumps(values | {"weights": "other weights"}))
    with pytest.raises(CnnCodesError, match="another extraction identity"):
        extract(tiny_folder, tmp_path)


@pytest.mark.slow  # precisions named: once, not again in the fp32 pass
def test_other_settings_never_reuse_a_store(tiny_folder, tmp_path, torch_runtime):
    ds = image_folder(tiny_folder).subset(np.arange(4))  # bf16 is emulated, slowly, on a CPU without it
    # precision named, not "auto": on a CPU without bf16, auto is fp32 and the first two would rightly share
    extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path, precision="bf16", progress=False)
    extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path, precision="fp32", progress=False)
    extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path, precision="fp32", flip=True, progress=False)
    assert len(stores(tmp_path)) == 3


def test_images_without_labels_get_codes_and_never_train(tiny_folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_folder, data)
    (data / "Unlabeled").mkdir()
    for k in range(3):
        shutil.move(data / "discs" / f"01{k}.png", data / "Unlabeled" / f"u{k}.png")
    ds = image_folder(data, cache_dir=tmp_path)
    assert ds.class_names == ["bars", "checkers", "discs"]
    unlabeled = [i for i, s in zip(ds.ids, ds.splits) if s == "unlabeled"]
    assert sorted(unlabeled) == ["Unlabeled/u0.png", "Unlabeled/u1.png", "Unlabeled/u2.png"]
    assert (ds.labels[ds.splits == "unlabeled"] == -1).all() and (ds.labels[ds.splits != "unlabeled"] >= 0).all()
    codes = extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path, progress=False)
    assert (codes.splits == "unlabeled").sum() == 3 and len(codes.labelled().ids) == 57


def test_a_manifest_with_empty_labels_and_a_path_twice(tiny_folder, tmp_path):
    rows = ["path,label"] + [f"{c}/{i:03d}.png,{c}" for c in ("bars", "discs") for i in range(10)]
    (tmp_path / "labels.csv").write_text("\n".join(rows + ["checkers/000.png,"]) + "\n")
    for c in ("bars", "discs", "checkers"):
        shutil.copytree(tiny_folder / c, tmp_path / c)
    ds = manifest(tmp_path / "labels.csv", cache_dir=tmp_path)
    assert list(ds.splits[ds.labels < 0]) == ["unlabeled"] and ds.class_names == ["bars", "discs"]
    (tmp_path / "labels.csv").write_text("\n".join(rows + ["bars/000.png,"]) + "\n")
    with pytest.raises(CnnCodesError, match="both with a label"):
        manifest(tmp_path / "labels.csv", cache_dir=tmp_path)


KILLABLE = """
import sys
from cnncodes import extract_codes, image_folder
extract_codes(image_folder(sys.argv[1], cache_dir=sys.argv[2]), "efficientnet_lite0", cache_dir=sys.argv[2],
              batch_size=1, threads=1, progress=False)
"""


def test_sigkill_mid_append_then_rerun_gives_the_uninterrupted_codes(tiny_folder, tmp_path, reference):
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(tiny_folder), str(tmp_path)])
    deadline = time.time() + 120
    while (not stores(tmp_path) or stored_images(tmp_path) < 5) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = stored_images(tmp_path)
    assert 5 <= done < 60, "the run should have been killed part-way"
    committed = (stores(tmp_path)[0] / "rows.bin").read_bytes()[:done * 1280 * 4]
    resumed = extract(tiny_folder, tmp_path, batch_size=1)
    assert stored_images(tmp_path) == 60
    assert (stores(tmp_path)[0] / "rows.bin").read_bytes()[:done * 1280 * 4] == committed, "committed rows rewritten"
    np.testing.assert_allclose(resumed.vectors, reference.vectors, atol=2e-2)  # batch of 1 vs 8: bf16 rounding only


def test_an_unreadable_file_is_read_again_once_readable(tiny_folder, tmp_path):
    """A file that vanishes (or loses its permissions) between listing and decoding says nothing about the image:
    reported, not stored; read when it is back."""
    data = tmp_path / "data"
    shutil.copytree(tiny_folder, data)
    ds = image_folder(data, cache_dir=tmp_path)
    away = data / "bars" / "000.png"
    away.rename(tmp_path / "away.png")
    codes = extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path, progress=False)
    assert dict(codes.skipped)["bars/000.png"].startswith("cannot read: No such file")
    assert stored_images(tmp_path) == 59
    (tmp_path / "away.png").rename(away)
    assert "bars/000.png" in extract(data, tmp_path).ids and stored_images(tmp_path) == 60


def test_bad_files_are_skipped_with_reasons_and_the_rest_is_right(tiny_folder, tmp_path, reference):
    data = tmp_path / "data"
    shutil.copytree(tiny_folder, data)
    (data / "bars" / "zero.jpg").write_bytes(b"")
    (data / "bars" / "text.jpg").write_text("hello")
    (data / "discs" / "trunc.jpg").write_bytes((tiny_folder / "discs" / "000.png").read_bytes()[:60])
    (data / "discs" / b"caf\xe9.png".decode("utf-8", "surrogateescape")).write_bytes(
        (tiny_folder / "discs" / "001.png").read_bytes())
    os.symlink("loop.jpg", data / "checkers" / "loop.jpg")
    os.symlink("/nonexistent/file.png", data / "checkers" / "dangling.png")
    os.mkfifo(data / "checkers" / "fifo.jpg")
    (data / "empty_class").mkdir()
    ds = image_folder(data)
    codes = extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path / "cache", progress=False)
    reasons = dict(codes.skipped)
    assert {"bars/zero.jpg", "bars/text.jpg", "discs/trunc.jpg", "checkers/loop.jpg", "checkers/dangling.png",
            "checkers/fifo.jpg", "empty_class/"} <= set(reasons)
    assert all(reasons.values())
    assert "an empty file" in reasons["bars/zero.jpg"] and "not an image Pillow can read" in reasons["bars/text.jpg"]
    assert ds.class_names == ["bars", "checkers", "discs"]
    good = {i: c for i, c in zip(codes.ids, codes.vectors)}
    ref = {i: c for i, c in zip(reference.ids, reference.vectors)}
    for item_id, c in ref.items():
        np.testing.assert_allclose(good[item_id], c, atol=2e-2)
    assert len(codes.ids) == len(reference.ids) + 1  # the non-UTF-8 name is a normal image


def test_codes_file_loads_with_numpy_in_one_line(tmp_path, reference):
    reference.save(tmp_path / "codes.npz")
    z = np.load(tmp_path / "codes.npz")
    assert z["codes"].shape == reference.vectors.shape and list(z["class_names"]) == reference.class_names
    assert Codes.load(tmp_path / "codes.npz").backbone == "efficientnet_lite0"

"""Codes survive interruption, damage and changed settings: resumed codes equal uninterrupted ones."""
import hashlib
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

from cnncodes import extract_codes, image_folder
from cnncodes.code_matrix import CodeMatrix
from cnncodes.codes import Codes
from cnncodes.files import npz_bytes


def shards(cache: Path) -> list[Path]:
    return sorted(cache.glob("codes/*/shard_*.json"))


@pytest.fixture(scope="module")
def reference(tiny_folder, tmp_path_factory):
    cache = tmp_path_factory.mktemp("ref-cache")
    return extract_codes(image_folder(tiny_folder), "efficientnet_lite0", cache_dir=cache, shard_size=8, progress=False)


def test_second_run_reuses_the_cache(tiny_folder, tmp_path, reference):
    first = extract_codes(image_folder(tiny_folder), "efficientnet_lite0", cache_dir=tmp_path, shard_size=8,
                          progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in shards(tmp_path)}
    again = extract_codes(image_folder(tiny_folder), "efficientnet_lite0", cache_dir=tmp_path, shard_size=8,
                          progress=False)
    assert stamps == {p: p.stat().st_mtime_ns for p in shards(tmp_path)}
    np.testing.assert_array_equal(first.vectors, again.vectors)
    np.testing.assert_allclose(first.vectors, reference.vectors, atol=1e-6)


def stamps(cache: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(cache.glob("codes/*/shard_*"))}


def test_damaged_shard_is_recomputed_not_loaded(tiny_folder, tmp_path, reference):
    extract_codes(image_folder(tiny_folder), "efficientnet_lite0", cache_dir=tmp_path, shard_size=8, progress=False)
    store = sorted(tmp_path.glob("codes/*/codes.npy"))[0]
    header = np.lib.format.open_memmap(store, mode="r").offset
    raw = bytearray(store.read_bytes())
    raw[header + (2 * 8 + 3) * 1280 * 4 + 17] ^= 0xFF  # one byte of a code in shard 2
    store.write_bytes(bytes(raw))
    commit = sorted(tmp_path.glob("codes/*/shard_00003.json"))[0]
    commit.write_bytes(commit.read_bytes()[:20])  # a torn commit
    before = stamps(tmp_path)
    again = extract_codes(image_folder(tiny_folder), "efficientnet_lite0", cache_dir=tmp_path, shard_size=8,
                          progress=False)
    after = stamps(tmp_path)
    rewritten = {name for name in before if after[name] != before[name]}
    assert rewritten == {"shard_00002.json", "shard_00003.json"}
    np.testing.assert_allclose(again.vectors, reference.vectors, atol=1e-6)


def test_codes_are_read_from_disk_and_open_with_numpy(tiny_folder, tmp_path, reference):
    assert isinstance(reference.vectors, CodeMatrix)  # nothing is held in memory until a step reads rows
    codes = extract_codes(image_folder(tiny_folder), "efficientnet_lite0", cache_dir=tmp_path, shard_size=8,
                          progress=False)
    on_disk = np.load(sorted(tmp_path.glob("codes/*/codes.npy"))[0], mmap_mode="r")
    np.testing.assert_array_equal(on_disk, np.asarray(codes.vectors))


def test_a_store_of_format_1_moves_into_the_codes_file(tiny_folder, tmp_path, reference):
    """Caches written before codes.npy (one .npz per shard) are reused, not computed again."""
    from cnncodes.codes import CodeStore

    extract_codes(image_folder(tiny_folder), "efficientnet_lite0", cache_dir=tmp_path, shard_size=8, progress=False)
    root = sorted(tmp_path.glob("codes/*/"))[0]
    values = np.load(root / "codes.npy")
    (root / "codes.npy").unlink()
    for k in range(8):  # rewrite it as format 1 left it; shard 5's file is damaged
        raw = npz_bytes(codes=values[8 * k:8 * k + 8], ok=np.ones(len(values[8 * k:8 * k + 8]), bool))
        (root / f"shard_{k:05d}.npz").write_bytes(raw if k != 5 else raw[:-10])
        (root / f"shard_{k:05d}.json").write_text(json.dumps({"sha256": hashlib.sha256(raw).hexdigest(), "skipped": {}}))
    store = CodeStore(root, 60, 1280, {}, shard_size=8)
    assert sorted(store.read_all()) == [0, 1, 2, 3, 4, 6, 7] and not list(root.glob("*.npz"))
    again = extract_codes(image_folder(tiny_folder), "efficientnet_lite0", cache_dir=tmp_path, shard_size=8,
                          progress=False)
    np.testing.assert_allclose(again.vectors, values, atol=1e-6)


def test_other_settings_never_reuse_a_cache(tiny_folder, tmp_path):
    ds = image_folder(tiny_folder)
    # precision named, not "auto": on a CPU without bf16, auto is fp32 and the first two would rightly share
    extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path, shard_size=8, precision="bf16", progress=False)
    extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path, shard_size=8, precision="fp32", progress=False)
    extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path, shard_size=8, precision="fp32", flip=True,
                  progress=False)
    assert len(list(tmp_path.glob("codes/*/manifest.json"))) == 3


def test_changed_image_changes_the_fingerprint(tiny_folder, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_folder, copy)
    before = image_folder(copy).fingerprint()
    img = copy / "bars" / "000.png"
    Image.new("RGB", (32, 32), (1, 1, 1)).save(img)
    os.utime(img, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert image_folder(copy).fingerprint() != before


KILLABLE = """
import sys
from cnncodes import extract_codes, image_folder
extract_codes(image_folder(sys.argv[1]), "efficientnet_lite0", cache_dir=sys.argv[2], shard_size=4, batch_size=1,
              progress=False)
"""


def test_sigkill_then_rerun_gives_the_uninterrupted_codes(tiny_folder, tmp_path, reference):
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(tiny_folder), str(tmp_path)])
    deadline = time.time() + 120
    while len(shards(tmp_path)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(shards(tmp_path))
    assert 3 <= done < 15, "the run should have been killed part-way"
    finished = {name: t for name, t in stamps(tmp_path).items() if name.endswith(".json")}
    resumed = extract_codes(image_folder(tiny_folder), "efficientnet_lite0", cache_dir=tmp_path, shard_size=4,
                            batch_size=1, progress=False)
    after = stamps(tmp_path)
    assert all(after[name] == t for name, t in finished.items()), "committed shards must be reused, not recomputed"
    assert len(after) == 15
    np.testing.assert_allclose(resumed.vectors, reference.vectors, atol=2e-2)  # batch of 1 vs 8: bf16 rounding only


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
    codes = extract_codes(ds, "efficientnet_lite0", cache_dir=tmp_path / "cache", shard_size=8, progress=False)
    reasons = dict(codes.skipped)
    assert {"bars/zero.jpg", "bars/text.jpg", "discs/trunc.jpg", "checkers/loop.jpg", "checkers/dangling.png",
            "checkers/fifo.jpg", "empty_class/"} <= set(reasons)
    assert all(reasons.values())
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

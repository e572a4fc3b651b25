"""Splits are stable: an item's split depends on its id (and, for validation only, the seed)."""
import os

import numpy as np

from cnncodes.data.datasets import assign_splits, from_arrays


def test_seed_never_moves_an_image_into_or_out_of_the_test_split():
    ids = [f"class{i % 3}/img{i:05d}.jpg" for i in range(5000)]
    a, b = assign_splits(ids, 20.0, 25.0, seed=0), assign_splits(ids, 20.0, 25.0, seed=7)
    assert np.array_equal(a == "test", b == "test")
    assert not np.array_equal(a == "validation", b == "validation")
    assert abs((a == "test").mean() - 0.20) < 0.02
    not_test = a != "test"
    assert abs((a[not_test] == "validation").mean() - 0.25) < 0.02  # a share of the images that are not test
    assert np.array_equal(assign_splits(ids[:100], 20.0, 25.0, seed=0), a[:100])  # per id, not per listing


def test_split_names_are_never_truncated():
    images = np.zeros((4, 2, 2, 3), np.uint8)
    ds = from_arrays(images, [0, 1, 0, 1], ["a", "b"], ["train", "train", "test", "test"])
    ds.splits[0] = "validation"
    assert ds.splits[0] == "validation"


import pytest  # noqa: E402

from cnncodes import CnnCodesError, image_folder  # noqa: E402

from .conftest import write_image_folder  # noqa: E402


def layout(root, *splits, per_class=6):
    for n, split in enumerate(splits):
        write_image_folder(root / split, per_class, seed=n)
    return root


@pytest.mark.parametrize("folders,expected", [
    (("train", "Val"), {"validation": 18}),  # any case; test carved from train/
    (("train", "test"), {"test": 18}),  # validation carved from train/
    (("train", "valid", "test"), {"validation": 18, "test": 18}),
    (("TRAIN", "validation"), {"validation": 18}),
])
def test_split_folders_are_splits_not_classes(tmp_path, folders, expected):
    ds = image_folder(layout(tmp_path, *folders), test_percent=20, validation_percent=20)
    assert ds.class_names == ["bars", "checkers", "discs"]
    for split, n in expected.items():
        from_folder = [i for i, s in zip(ds.ids, ds.splits) if s == split]
        assert len(from_folder) == n and all(i.lower().startswith(folders[1].lower()) or split == "test"
                                             for i in from_folder)
        assert all(not i.lower().startswith("train") for i in from_folder)
    carved = {s for i, s in zip(ds.ids, ds.splits) if i.lower().startswith("train")}
    assert carved == {"train"} | ({"validation", "test"} - set(expected))


@pytest.mark.parametrize("make,message", [
    (lambda r: (layout(r, "train"), (r / "val").mkdir(), (r / "val" / "a.png").write_bytes(b"x")),
     "val/ has no class folders"),
    (lambda r: (layout(r, "train"), write_image_folder(r / "cats", 2, seed=1)), "beside other folders"),
    (lambda r: (layout(r, "train"), write_image_folder(r / "train" / "test" / "x", 2, seed=1)),
     "class folder named like a split"),
    (lambda r: layout(r, "val", "test"), "no train/ folder"),
])
def test_malformed_layouts_say_what_was_expected(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(CnnCodesError, match=message):
        image_folder(tmp_path)


def test_a_manifest_gives_labels_and_splits_that_folders_cannot(tmp_path):
    """path,label,split rows (paths relative to the CSV); rows without a split are carved; bad rows reported."""
    from cnncodes import extract_codes, load_dataset

    write_image_folder(tmp_path / "pool", 6, seed=0)
    files = sorted((tmp_path / "pool").rglob("*.png"))
    lines = ["path,label,split"]
    for n, f in enumerate(files):
        label = "round" if f.parent.name == "discs" else "straight"  # labels unrelated to the folder names
        split = "test" if n % 6 == 0 else ("val" if n % 6 == 1 else "")
        lines.append(f"{f.relative_to(tmp_path).as_posix()},{label},{split}")
    lines.append(",straight,")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(tmp_path / "labels.csv")
    assert ds.class_names == ["round", "straight"] and len(ds) == 18
    assert (ds.splits == "test").sum() == 3 and (ds.splits == "validation").sum() == 3
    assert dict(ds.problems) == {"line 20": "no path: row ignored"}
    assert extract_codes(ds, "efficientnet_lite0", progress=False).vectors.shape == (18, 1280)


@pytest.mark.parametrize("text,message", [("file,class\na.png,x\n", "not a manifest"),
                                          ("path,lable,split\na.png,x,\n", "header row is 'path,lable,split'"),
                                          ("path,label,split\na.png,x,holdout\nb.png,y,\n", "unknown split")])
def test_malformed_manifests_are_named(tmp_path, text, message):
    from cnncodes import load_dataset

    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(CnnCodesError, match=message):
        load_dataset(tmp_path / "m.csv")


def test_a_manifest_names_its_problems(tmp_path):
    """Outside paths are refused; a missing file or a FIFO is skipped with its reason; all paths wrong says how
    they resolved; loose images in a folder get a hint."""
    from cnncodes.data.datasets import manifest

    write_image_folder(tmp_path / "pool", 4, seed=0)
    rows = [f"pool/{c}/{i:03d}.png,{c}" for c in ("discs", "bars") for i in range(4)]
    csv = tmp_path / "labels.csv"
    for bad in ("/etc/passwd", "../outside.png", "pool/../../x.png", f"{tmp_path}_other/pool/discs/000.png"):
        csv.write_text("path,label\n" + "\n".join(rows + [f"{bad},discs"]) + "\n")
        with pytest.raises(CnnCodesError, match=f"outside the manifest's folder '{tmp_path}'"):
            manifest(csv, cache_dir=tmp_path / "c")
    # an absolute path inside the folder, and a detour through it, name the image as its relative path does
    odd = [f"{tmp_path}/{rows[0]}", *rows[1:4], "pool/../pool/bars/000.png,bars", *rows[5:]]
    csv.write_text("path,label\n" + "\n".join(odd) + "\n")
    assert sorted(manifest(csv, cache_dir=tmp_path / "c").ids) == sorted(r.split(",")[0] for r in rows)
    (tmp_path.parent / f"{tmp_path.name}_link").symlink_to(tmp_path)  # the folder reached through a link
    assert sorted(manifest(tmp_path.parent / f"{tmp_path.name}_link" / "labels.csv", cache_dir=tmp_path / "c").ids) \
        == sorted(r.split(",")[0] for r in rows)
    os.mkfifo(tmp_path / "pool" / "fifo.png")
    csv.write_text("path,label\n" + "\n".join(rows + ["pool/gone.png,bars", "pool/fifo.png,bars"]) + "\n")
    ds = manifest(csv, cache_dir=tmp_path / "c")
    assert dict(ds.problems) == {"pool/gone.png": "missing: no such file", "pool/fifo.png": "not a regular file"}
    csv.write_text("path,label\n" + "\n".join(f"photos/{r}" for r in rows) + "\n")
    with pytest.raises(CnnCodesError, match=r"none of the 8 images .* can be read \(8 missing, e.g. 'photos/pool"):
        manifest(csv, cache_dir=tmp_path / "c")
    loose = tmp_path / "loose"
    loose.mkdir()
    for f in sorted((tmp_path / "pool" / "discs").glob("*.png")):
        f.rename(loose / f.name)
    with pytest.raises(CnnCodesError, match="4 image files lie directly in it"):
        image_folder(loose, cache_dir=tmp_path / "c")

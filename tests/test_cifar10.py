"""The official CIFAR-10 archive format, on small archives built here; hostile archives are refused."""
import io
import pickle
import tarfile

import numpy as np
import pytest

from cnncodes import CnnCodesError
from cnncodes.data import cifar10
from cnncodes.data.datasets import cifar10_dataset


def batch_bytes(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"x", b"labels": [int(v) for v in rng.integers(0, 10, n)],
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"f"] * n}
    return pickle.dumps(batch, protocol=2)


def build_archive(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def official_members(n=4) -> dict[str, bytes]:
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    members = {"cifar-10-batches-py/batches.meta": pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2)}
    for i in range(1, 6):
        members[f"cifar-10-batches-py/data_batch_{i}"] = batch_bytes(n, i)
    members["cifar-10-batches-py/test_batch"] = batch_bytes(n, 9)
    return members


def test_reads_official_format(tmp_path):
    path = build_archive(tmp_path / "cifar-10-python.tar.gz", official_members())
    ds = cifar10_dataset(path)
    assert len(ds) == 24 and ds.class_names[0] == "airplane"
    assert (ds.splits == "test").sum() == 4
    raw = pickle.loads(official_members()["cifar-10-batches-py/data_batch_1"], encoding="bytes")[b"data"]
    first = ds.read(0)
    assert first.shape == (32, 32, 3)
    assert first[0, 0].tolist() == [raw[0, 0], raw[0, 1024], raw[0, 2048]]  # R, G, B planes


class CreatesFile:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_malicious_pickle_does_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    members = official_members()
    members["cifar-10-batches-py/data_batch_1"] = pickle.dumps({b"data": CreatesFile()}, protocol=2)
    path = build_archive(tmp_path / "evil.tar.gz", members)
    with pytest.raises(CnnCodesError, match="refusing to load"):
        cifar10.load(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside", "cifar-10-batches-py/../../x"])
def test_escaping_member_names_are_refused(tmp_path, name):
    members = official_members() | {name: b"x"}
    with pytest.raises(CnnCodesError, match="escapes"):
        cifar10.load(build_archive(tmp_path / "a.tar.gz", members))


def test_link_members_are_refused(tmp_path):
    path = build_archive(tmp_path / "a.tar.gz", official_members())
    with tarfile.open(path, "r:gz") as src, tarfile.open(tmp_path / "b.tar.gz", "w:gz") as dst:
        for m in src:
            dst.addfile(m, src.extractfile(m))
        link = tarfile.TarInfo("cifar-10-batches-py/evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        dst.addfile(link)
    with pytest.raises(CnnCodesError, match="links"):
        cifar10.load(tmp_path / "b.tar.gz")


def test_offline_download_says_how_to_use_a_local_copy(tmp_path):
    with pytest.raises(CnnCodesError, match="--data /path/to/cifar-10-python.tar.gz"):
        cifar10.fetch_archive(tmp_path / "cifar-10-python.tar.gz", url="http://127.0.0.1:9/none.tar.gz")
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_download_checks_md5_and_renames_only_when_complete(tmp_path):
    src = build_archive(tmp_path / "src.tar.gz", official_members())
    dest = tmp_path / "cache" / "cifar-10-python.tar.gz"
    with pytest.raises(CnnCodesError, match="md5"):
        cifar10.fetch_archive(dest, url=src.as_uri(), md5="0" * 32)
    assert not dest.exists()
    cifar10.fetch_archive(dest, url=src.as_uri(), md5=cifar10._md5(src))
    assert dest.read_bytes() == src.read_bytes()


def test_archive_run_end_to_end_has_all_three_splits(tmp_path):
    """`cnncodes run --data ARCHIVE`: 20% of the training images form the validation split (a too-narrow string
    dtype once truncated 'validation' and dropped them from every split)."""
    from cnncodes.data.datasets import assign_splits
    from cnncodes.pipeline import run_experiment
    from cnncodes.settings import RunSettings

    path = build_archive(tmp_path / "cifar-10-python.tar.gz", official_members(n=40))
    result = run_experiment(RunSettings(data=str(path)), tmp_path / "run", report=False, progress=False)
    sizes = result.metrics["split_sizes"]
    expected = int((assign_splits([f"cifar10/train/{i}" for i in range(200)], 0.0, 20.0, 0) == "validation").sum())
    assert sizes == {"train": 200 - expected, "validation": expected, "test": 40}
    assert 20 <= expected <= 60 and len(result.head.search_) > 1

"""A CodeMatrix reads the same numbers NumPy indexing would give, whatever the selection, order or layout."""
import numpy as np

from cnncodes.codes.matrix import CodeMatrix, FileRows, chunks, hstack, take, vstack


def on_disk(tmp_path, array, name="a.npy"):
    np.save(tmp_path / name, array)
    return CodeMatrix([FileRows(tmp_path / name)])


def test_rows_in_any_order_with_repeats_match_numpy(tmp_path):
    a = np.random.default_rng(0).normal(size=(1000, 7)).astype(np.float32)
    m = on_disk(tmp_path, a)
    rows = np.random.default_rng(1).integers(0, 1000, 300)
    np.testing.assert_array_equal(m[rows], a[rows])
    np.testing.assert_array_equal(m[10:500:3], a[10:500:3])
    np.testing.assert_array_equal(m[5], a[5])
    np.testing.assert_array_equal(np.asarray(m), a)


def test_select_join_and_stack_compose_without_reading(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 5)).astype(np.float32)
    b = rng.normal(size=(300, 3)).astype(np.float16)
    mask = rng.random(300) < 0.6
    reads = []
    monkeypatch.setattr(FileRows, "take", lambda self, rows, _take=FileRows.take: reads.append(len(rows)) or _take(self, rows))
    joined = hstack(take(on_disk(tmp_path, a), mask), take(on_disk(tmp_path, b, "b.npy"), mask))
    stacked = vstack(joined, np.zeros((4, 8), np.float32))
    assert reads == [] and isinstance(stacked, CodeMatrix), "composing read rows"
    expected = np.hstack([a[mask], b[mask]]).astype(np.float32)
    assert isinstance(joined, CodeMatrix) and joined.shape == expected.shape and joined.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(joined), expected)
    assert reads, "reading the rows goes through the file"
    stacked = vstack(joined, expected[::-1] * 2)
    both = np.vstack([expected, expected[::-1] * 2])
    rows = rng.permutation(len(both))[:100]
    np.testing.assert_array_equal(stacked[rows], both[rows])
    np.testing.assert_array_equal(take(stacked, rows)[::7], both[rows][::7])
    np.testing.assert_array_equal(np.vstack([c for _, c in chunks(stacked, 37)]), both)

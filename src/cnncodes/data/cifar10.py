"""CIFAR-10 from the official archive: download with checksum, safe tar reading, safe unpickling."""
from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from ..errors import CnnCodesError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"


def default_cache_dir() -> Path:
    return Path(os.environ.get("CNNCODES_CACHE") or Path.home() / ".cache" / "cnncodes")


def looks_like_cifar(data) -> bool:
    p = Path(data)
    return p.name.endswith(".tar.gz") or (p.is_dir() and (p / "batches.meta").exists())


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_archive(dest: Path, url: str = URL, md5: str = MD5) -> Path:
    """Download to a temporary file beside dest and rename it only once complete and checked."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        if _md5(Path(tmp)) != md5:
            raise CnnCodesError(f"downloaded {url} but its md5 is not {md5}; try again or download it by hand")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        raise CnnCodesError(
            f"cannot download CIFAR-10 ({exc}); copy {ARCHIVE} from {url} to {dest.parent}/ "
            f"or pass --data /path/to/{ARCHIVE}"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


class _BatchUnpickler(pickle.Unpickler):
    """Allows exactly what the CIFAR batches hold (dicts, lists, bytes, numpy arrays); nothing can run."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2: a pure function, safe
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR-10 batch")
        import importlib

        return getattr(importlib.import_module(module), name)


def unpickle_batch(raw: bytes) -> dict:
    import io

    try:
        return _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ModuleNotFoundError) as exc:
        raise CnnCodesError(f"not a valid CIFAR-10 batch: {exc}") from None


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if name.startswith("/") or ".." in Path(name).parts:
        raise CnnCodesError(f"refusing archive member {name!r}: path escapes the archive")
    if member.issym() or member.islnk() or not (member.isfile() or member.isdir()):
        raise CnnCodesError(f"refusing archive member {name!r}: links and special files are not allowed")


def _read_archive(path: Path) -> dict[str, bytes]:
    """The batch files of the archive, by base name; read in memory, nothing is extracted to disk."""
    wanted = set(TRAIN_BATCHES) | {TEST_BATCH, "batches.meta"}
    found = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                _check_member(member)
                base = Path(member.name).name
                if member.isfile() and base in wanted:
                    found[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CnnCodesError(f"{path} is not a readable CIFAR-10 archive ({exc}); delete it and download again") from None
    return found


def _read_folder(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in path.iterdir() if f.is_file()}


def _to_images(batch: dict) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise CnnCodesError(f"CIFAR-10 batch data has shape {data.shape}, expected (N, 3072)")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    return images, labels


def load(data=None, cache_dir=None, download: bool = True) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(images, labels, class names, splits) of CIFAR-10 (50,000 train / 10,000 test) from an archive path, an
    extracted folder, or the cache (cnncodes.data.datasets makes the Dataset)."""
    if data is None:
        path = Path(cache_dir or default_cache_dir()) / ARCHIVE
        if not path.exists():
            if not download:
                raise CnnCodesError(f"CIFAR-10 not found at {path}; pass --data /path/to/{ARCHIVE}")
            fetch_archive(path)
    else:
        path = Path(data)
        if not path.exists():
            raise CnnCodesError(f"{path} does not exist; pass the path of {ARCHIVE} or of its extracted folder")
    files = _read_folder(path) if path.is_dir() else _read_archive(path)
    missing = [n for n in TRAIN_BATCHES + [TEST_BATCH, "batches.meta"] if n not in files]
    if missing:
        raise CnnCodesError(f"{path} lacks {', '.join(missing)}: not the CIFAR-10 python archive")
    meta = unpickle_batch(files["batches.meta"])
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"]]
    parts = [_to_images(unpickle_batch(files[n])) for n in TRAIN_BATCHES + [TEST_BATCH]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    n_test = len(parts[-1][1])
    splits = np.array(["train"] * (len(labels) - n_test) + ["test"] * n_test, dtype=object)
    return images, labels, class_names, splits

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def need_shared(sub: str = "") -> Path:
    """Path into ../shared/data; skipped where absent, except under CI=true where it must exist."""
    path = SHARED_DATA / sub
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {path} is missing")
        pytest.skip(f"{path} not present (tests on real data need ../shared/data)")
    return path


def cli(*args, cwd=None):
    """The command line in a fresh process, quiet, without the malloc re-exec."""
    env = dict(os.environ, CNNCODES_NO_REEXEC="1")
    return subprocess.run([sys.executable, "-m", "cnncodes", "--quiet", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Every test writes codes to a cache of the session, never to the user's (session-wide, so that module
    fixtures, which start before any function-scoped fixture, are isolated too)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNCODES_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


def make_image(kind: int, rng, size: int = 32) -> np.ndarray:
    """Synthetic classes a CNN separates easily: red discs, green bars, blue checker boards."""
    img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2 + rng.normal(0, 2, 2)
    if kind == 0:
        img[(yy - c[0]) ** 2 + (xx - c[1]) ** 2 < (size / 3) ** 2] = (220, 30, 30)
    elif kind == 1:
        img[:, (xx[0] // 4) % 2 == 0] = (30, 200, 40)
    else:
        img[((yy // 8) + (xx // 8)) % 2 == 0] = (40, 40, 230)
    return img


def write_image_folder(root: Path, per_class: int, seed: int) -> Path:
    """One tree of class folders (discs, bars, checkers) of synthetic PNG images."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(["discs", "bars", "checkers"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(make_image(k, rng)).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """3 classes x 20 PNG images in one tree (test and validation carved by hash)."""
    return write_image_folder(tmp_path_factory.mktemp("tiny"), 20, seed=0)


@pytest.fixture(scope="session")
def tiny_run(tiny_folder, tmp_path_factory) -> Path:
    """A finished run (no report) on the tiny folder: the model that prediction, serving and maps start from."""
    out = tmp_path_factory.mktemp("tiny_run")
    result = cli("run", "--data", tiny_folder, "--out", out, "--no-report")
    assert result.returncode == 0, result.stderr
    return out

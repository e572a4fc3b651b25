import contextlib
import ctypes
import os
import subprocess
import sys
import time
import warnings
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


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """The command line as a fresh process runs it (quiet, without the malloc re-exec), but in this process: its
    exit code, and everything written to stdout and stderr, by Python or by native code (ONNX Runtime), with the
    warnings shown as a process shows them. A process per command spent minutes of the suite importing torch and
    scikit-learn again; what only a real process shows (signals, the entry point, the re-exec) has tests of its own.
    Unlike a fresh process, modules stay imported (a warning at import time shows once) and their caches (ONNX
    Runtime sessions per graph file) stay filled."""
    import io
    import tempfile
    import traceback

    from cnncodes.cli import main

    argv = ["--quiet", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryFile() as native_out, tempfile.TemporaryFile() as native_err, \
            _native_output_to(native_out, native_err), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err), warnings.catch_warnings(), _working_folder(cwd):
        warnings.resetwarnings()  # then Python's defaults: each warning once per place, these categories never
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.showwarning = _show_warning
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help, bad arguments
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:  # noqa: BLE001 - what a process does with an uncaught error: traceback, exit code 1
            traceback.print_exc()
            code = 1
        return subprocess.CompletedProcess(argv, code, out.getvalue() + _read(native_out),
                                           err.getvalue() + _read(native_err))


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _native_output_to(out_file, err_file):
    """File descriptors 1 and 2 pointed at the files for the block (what native code writes)."""
    saved = []
    for fd, target in ((1, out_file), (2, err_file)):
        (sys.__stdout__ if fd == 1 else sys.__stderr__).flush()
        saved.append(os.dup(fd))
        os.dup2(target.fileno(), fd)
    try:
        yield
    finally:
        ctypes.CDLL(None).fflush(None)  # what C's stdio still buffers belongs to the command
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def _working_folder(folder):
    """The command's current folder (contextlib.chdir is Python 3.11's; the package supports 3.10)."""
    before = os.getcwd()
    if folder is not None:
        os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _read(native) -> str:
    native.seek(0)
    return native.read().decode(errors="replace")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Every test writes codes to a cache of the session, never to the user's (session-wide, so that module
    fixtures, which start before any function-scoped fixture, are isolated too). Where --runtime auto means int8 (a
    CPU with VNNI), the suite's runs take the float runtime auto picks without VNNI: every new test collection would
    calibrate an int8 graph of its own (seconds each); int8 has tests of its own, which name it."""
    from cnncodes.codes import runtime

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNCODES_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        if runtime.resolve_runtime("auto", "cpu") == "onnx-int8":
            patch.setenv(runtime.RUNTIME_ENV, "torch" if runtime.resolve_precision("auto", "cpu") == "bf16" else "onnx")
        yield


@pytest.fixture(scope="module")
def torch_runtime():
    """--runtime auto means torch for the module: for tests about something else (the store, the engines) that make
    fresh caches, in each of which auto would first export an ONNX graph on a CPU without bf16."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNCODES_RUNTIME", "torch")
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: str, target, *args, ready: str, wait: float = 180):
    """`cnncodes COMMAND TARGET --port P ARGS` in the background: (process, base URL) once GET `ready` answers."""
    import httpx

    port = free_port()
    env = dict(os.environ, CNNCODES_NO_REEXEC="1")
    proc = subprocess.Popen([sys.executable, "-m", "cnncodes", "--quiet", command, str(target), "--port", str(port),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + wait
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server stopped: {proc.stderr.read()}")
        try:
            if httpx.get(url + ready, timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the server did not answer within {wait:.0f} s")

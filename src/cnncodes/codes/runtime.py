"""Process-level speed settings: device and precision choice, threads, and the malloc that avoids page faults."""
from __future__ import annotations

import ctypes.util
import glob
import os
import sys
from functools import lru_cache

from ..errors import CnnCodesError

PRECISION_ENV = "CNNCODES_PRECISION"  # fp32 or bf16: what --precision auto means on this machine
RUNTIMES = ("torch", "onnx", "onnx-int8")  # what can compute the codes (onnx_graphs: the two ONNX Runtime ones)
RUNTIME_ENV = "CNNCODES_RUNTIME"  # one of RUNTIMES: what --runtime auto means on this machine
TCMALLOC_ENV = "CNNCODES_MALLOC"  # set once the process runs with the fast allocator, so we re-exec only once


def resolve_device(device: str, runtime: str = "torch") -> str:
    """The torch device to compute on; the onnx runtimes run on the CPU (and never import torch)."""
    if runtime != "torch":
        if device not in ("auto", "cpu"):
            raise CnnCodesError(f"--runtime {runtime} runs on the CPU: use --device cpu (or auto), or --runtime torch")
        return "cpu"
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CnnCodesError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    if not device.startswith("cuda"):
        raise CnnCodesError(f"--device must be auto, cpu or cuda[:N] (got {device!r})")
    return device


@lru_cache(maxsize=1)
def _cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux), read once: a server asks on every request."""
    try:
        with open("/proc/cpuinfo") as info:
            return {flag for line in info if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def cpu_has_bf16() -> bool:
    """bf16 autocast is only a speed-up where the CPU multiplies bf16 natively (AVX512-BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def cpu_has_vnni() -> bool:
    """int8 dot products in one instruction (AVX512-VNNI, AVX-VNNI or AMX): where ONNX Runtime's int8 kernels are
    fast."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & _cpu_flags())


def resolve_precision(precision: str, device: str = "auto") -> str:
    if precision not in ("auto", "fp32", "bf16"):
        raise CnnCodesError(f"--precision must be auto, fp32 or bf16 (got {precision!r})")
    if precision == "auto" and os.environ.get(PRECISION_ENV) in ("fp32", "bf16"):
        precision = os.environ[PRECISION_ENV]  # a machine-wide choice, e.g. fp32 to check what fp32-only CPUs get
    if precision != "auto":
        return precision
    if resolve_device(device) != "cpu":
        return "bf16"
    return "bf16" if cpu_has_bf16() else "fp32"


def resolve_runtime(runtime: str, device: str = "auto", precision: str = "auto") -> str:
    """What computes the codes. auto: torch on a GPU; on a CPU with ONNX Runtime installed, its int8 kernels where
    the CPU has VNNI and no float precision is asked for (a first run's codes of CIFAR-10 took 130 s there against
    361 s for torch in bf16, at the same accuracy: docs/benchmarks.md, "A first run"), else torch where the CPU
    multiplies bf16 natively, else ONNX Runtime's fp32 kernels (on a CPU without bf16, `cnncodes extract` of Lite0
    ran 1.9 times as fast on them as on torch in fp32: docs/benchmarks.md, Speed)."""
    if runtime == "auto" and os.environ.get(RUNTIME_ENV) in RUNTIMES:
        runtime = os.environ[RUNTIME_ENV]
    if runtime != "auto":
        return runtime
    import importlib.util

    if device == "auto" and sys.platform == "linux" and not os.path.exists("/proc/driver/nvidia/version"):
        device = "cpu"  # no NVIDIA driver, no CUDA: known without importing torch (the onnx runtimes never do)
    if resolve_device(device) != "cpu" or \
            not all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime", "onnxscript")):
        return "torch"  # (onnxscript: what exports a network's graph)
    asked = precision if precision != "auto" else os.environ.get(PRECISION_ENV, "auto")
    if asked not in ("fp32", "bf16") and cpu_has_vnni():  # a precision asked for is one of float codes
        return "onnx-int8"
    return "torch" if resolve_precision(precision, device) == "bf16" else "onnx"


def cpu_count() -> int:
    """CPUs this process may use (its affinity where the OS has one: not on macOS)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return max(1, len(affinity(0)) if affinity else os.cpu_count() or 1)


def configure_threads() -> None:
    import torch

    torch.set_num_threads(cpu_count())


def find_tcmalloc() -> str | None:
    candidates = glob.glob("/usr/lib/*/libtcmalloc_minimal.so.4") + glob.glob("/usr/lib/libtcmalloc_minimal.so.4")
    found = ctypes.util.find_library("tcmalloc_minimal")
    return candidates[0] if candidates else found


def fast_malloc_env(env: dict, tcmalloc: str | None) -> dict:
    """The environment of the re-executed CLI: tcmalloc preloaded, or glibc told to keep freed memory; the
    caller's LD_PRELOAD and GLIBC_TUNABLES are kept."""
    env = dict(env)
    if tcmalloc:
        env["LD_PRELOAD"] = (tcmalloc + " " + env.get("LD_PRELOAD", "")).strip()
        env[TCMALLOC_ENV] = "tcmalloc"
    else:
        tunables = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), tunables]))
        env[TCMALLOC_ENV] = "glibc-tuned"
    return env


def reexec_with_fast_malloc() -> None:
    """Restart the CLI once with tcmalloc preloaded (or glibc tuned not to return memory to the OS).

    glibc malloc gives large activations back to the kernel after every batch and page-faults them in
    again; that dominated CPU extraction here (benchmarks/extract_speed.py).
    """
    if os.environ.get(TCMALLOC_ENV) or os.environ.get("CNNCODES_NO_REEXEC"):
        return
    env = fast_malloc_env(dict(os.environ), find_tcmalloc())
    # `-c` with the current folder dropped from sys.path: `python -m` would import a numpy.py lying there
    os.execve(sys.executable, [sys.executable, "-c", REEXEC_CODE, *sys.argv[1:]], env)


REEXEC_CODE = "import sys; del sys.path[0]; from cnncodes.cli import main; sys.exit(main())"

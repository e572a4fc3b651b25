"""The prediction server under load: requests per second and latency with 1, 8 and 32 concurrent clients, against
prediction in one process on the same images; the server's resident memory after 100 and after N requests.

    cnncodes run --data ../shared/data/cifar10-exact --runtime onnx-int8 --out RUN --no-report
    python benchmarks/serve_load.py --model RUN --images ../shared/data/cifar10-exact/test [--requests 10000]
        [--json results/serve_load.json]

Each client sends one image per request, one request at a time (CIFAR PNGs of 32 x 32 pixels, and a 12-megapixel
JPEG made from one of them); latency is measured by the client, end to end. Goals: at 8 clients at least 80% of the
one-process throughput; p99 of one 32-pixel image with one client at most 20 ms on 2 cores with an int8 model;
memory flat between 100 and N requests.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnncodes.predict import Predictor, list_images  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server(model: str):
    import httpx

    port = free_port()
    env = dict(os.environ, CNNCODES_NO_REEXEC="1")
    proc = subprocess.Popen([sys.executable, "-m", "cnncodes", "--quiet", "serve", model, "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not start: {proc.stderr.read()}")


def load(url: str, blobs: list[bytes], clients: int, requests: int) -> dict:
    """`requests` requests from `clients` threads, each with its own connection: throughput and latency."""
    import httpx

    def client(n: int) -> list[float]:
        took = []
        with httpx.Client(timeout=120) as http:
            for i in range(n, requests, clients):
                blob = blobs[i % len(blobs)]
                t0 = time.perf_counter()
                answer = http.post(url + "/predict", files=[("file", ("image", blob))])
                took.append(time.perf_counter() - t0)
                assert answer.status_code == 200, answer.text
        return took

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = np.concatenate([np.array(t) for t in pool.map(client, range(clients))])
    seconds = time.perf_counter() - t0
    return {"clients": clients, "requests": requests, "per_second": requests / seconds,
            "p50_ms": float(np.percentile(latencies, 50) * 1000), "p99_ms": float(np.percentile(latencies, 99) * 1000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a run folder or model.onnx")
    parser.add_argument("--images", required=True, help="a folder of small images (CIFAR-10 PNGs)")
    parser.add_argument("--requests", type=int, default=10000, help="requests of the memory check")
    parser.add_argument("--per-level", type=int, default=400, help="requests per client count (a tenth for 12 MP)")
    parser.add_argument("--json", default=None)
    a = parser.parse_args()
    from PIL import Image

    paths = list_images([a.images])[:500]
    small = [p.read_bytes() for p in paths]
    buffer = io.BytesIO()
    Image.open(paths[0]).convert("RGB").resize((4000, 3000), Image.BICUBIC).save(buffer, "JPEG", quality=90)
    phone = [buffer.getvalue()]

    predictor = Predictor(a.model)
    predictor(small[:8])  # warm
    t0 = time.perf_counter()
    predictor(small)
    offline = len(small) / (time.perf_counter() - t0)
    print(f"one process, batch of {len(small)} small images: {offline:.1f} images/s", flush=True)

    proc, url = server(a.model)
    try:
        load(url, small, 1, 20)  # warm
        rows = []
        for kind, blobs, counts in (("32 px PNG", small, (1, 8, 32)), ("12 MP JPEG", phone, (1, 8))):
            for clients in counts:
                row = load(url, blobs, clients, a.per_level if kind == "32 px PNG" else max(8, a.per_level // 10)) | {"image": kind}
                rows.append(row)
                print(json.dumps(row), flush=True)
        memory = {"after_100": None, "after_n": None}
        load(url, small, 8, 100)
        memory["after_100"] = rss_mb(proc.pid)
        load(url, small, 8, a.requests)
        memory["after_n"] = rss_mb(proc.pid)
        print(f"resident memory: {memory['after_100']:.0f} MB after 100 requests, {memory['after_n']:.0f} MB after "
              f"{a.requests + 100 + 20 + sum(r['requests'] for r in rows):,}", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    print("\n| image | clients | requests/s | p50 ms | p99 ms | share of one-process throughput |\n|---|---|---|---|---|---|")
    for r in rows:
        share = f"{r['per_second'] / offline * 100:.0f}%" if r["image"] == "32 px PNG" else ""
        print(f"| {r['image']} | {r['clients']} | {r['per_second']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {share} |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"offline_per_second": offline, "rows": rows, "memory_mb": memory}, indent=1))


if __name__ == "__main__":
    main()

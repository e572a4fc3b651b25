"""The prediction server under load: requests per second and latency with 1, 8 and 32 concurrent clients, against
prediction in one process on the same images; the server's resident memory after 100 and after N requests.

    cnncodes run --data ../shared/data/cifar10-exact --runtime onnx-int8 --out RUN --no-report
    python benchmarks/serve_load.py --model RUN --images ../shared/data/cifar10-exact/test [--requests 10000]
        [--json results/serve_load.json]

Each client sends one image per request, one request at a time (CIFAR PNGs of 32 x 32 pixels, and a 12-megapixel
JPEG made from one of them), on a keep-alive connection, its forms encoded beforehand; latency is measured by the
client, end to end. The clients run on the server's cores: each row says the CPU time per request of the server and
of the clients. Goals: at 8 clients at least 80% of the
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def multipart(blob: bytes) -> tuple[bytes, str]:
    """The body and content type of a form with one image as field `file`, encoded once: the clients spend
    their CPU on sending, not on encoding (they share the server's cores)."""
    boundary = "cnncodes-load-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"image\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + blob + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def load(url: str, bodies: list[tuple[bytes, str]], clients: int, requests: int, server_pid: int) -> dict:
    """`requests` requests from `clients` threads, each on its own keep-alive connection (the standard library's
    http.client: little CPU per request beside the server's, on the same cores): throughput, latency, and the CPU
    time the server and the clients took per request."""
    from http.client import HTTPConnection
    from urllib.parse import urlsplit

    host, port = urlsplit(url).hostname, urlsplit(url).port

    def client(n: int) -> list[float]:
        took = []
        http = HTTPConnection(host, port, timeout=120)
        try:
            for i in range(n, requests, clients):
                body, kind = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                http.request("POST", "/predict", body=body, headers={"Content-Type": kind})
                answer = http.getresponse()
                text = answer.read()
                took.append(time.perf_counter() - t0)
                assert answer.status == 200, text
        finally:
            http.close()
        return took

    server_cpu, own_cpu, t0 = cpu_seconds(server_pid), time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = np.concatenate([np.array(t) for t in pool.map(client, range(clients))])
    seconds = time.perf_counter() - t0
    return {"clients": clients, "requests": requests, "per_second": requests / seconds,
            "p50_ms": float(np.percentile(latencies, 50) * 1000), "p99_ms": float(np.percentile(latencies, 99) * 1000),
            "server_cpu_ms": (cpu_seconds(server_pid) - server_cpu) / requests * 1000,
            "clients_cpu_ms": (time.process_time() - own_cpu) / requests * 1000}


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
    phone = [multipart(buffer.getvalue())]
    small_forms = [multipart(blob) for blob in small]

    predictor = Predictor(a.model)
    predictor(small[:8])  # warm
    t0, cpu0 = time.perf_counter(), time.process_time()
    predictor(small)
    offline = len(small) / (time.perf_counter() - t0)
    offline_cpu_ms = (time.process_time() - cpu0) / len(small) * 1000
    print(f"one process, batch of {len(small)} small images: {offline:.1f} images/s, {offline_cpu_ms:.1f} CPU ms "
          "per image", flush=True)

    proc, url = server(a.model)
    try:
        load(url, small_forms, 1, 20, proc.pid)  # warm
        rows = []
        for kind, bodies, counts in (("32 px PNG", small_forms, (1, 8, 32)), ("12 MP JPEG", phone, (1, 8))):
            for clients in counts:
                size = a.per_level if kind == "32 px PNG" else max(8, a.per_level // 10)
                row = load(url, bodies, clients, size, proc.pid) | {"image": kind}
                rows.append(row)
                print(json.dumps(row), flush=True)
        memory = {"after_100": None, "after_n": None}
        load(url, small_forms, 8, 100, proc.pid)
        memory["after_100"] = rss_mb(proc.pid)
        load(url, small_forms, 8, a.requests, proc.pid)
        memory["after_n"] = rss_mb(proc.pid)
        print(f"resident memory: {memory['after_100']:.0f} MB after 100 requests, {memory['after_n']:.0f} MB after "
              f"{a.requests + 100 + 20 + sum(r['requests'] for r in rows):,}", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    print("\n| image | clients | requests/s | p50 ms | p99 ms | share of one-process throughput | server CPU ms "
          "per request | clients' CPU ms per request |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = f"{r['per_second'] / offline * 100:.0f}%" if r["image"] == "32 px PNG" else ""
        print(f"| {r['image']} | {r['clients']} | {r['per_second']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {share} "
              f"| {r['server_cpu_ms']:.1f} | {r['clients_cpu_ms']:.1f} |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"offline_per_second": offline, "offline_cpu_ms": offline_cpu_ms, "rows": rows, "memory_mb": memory}, indent=1))


if __name__ == "__main__":
    main()

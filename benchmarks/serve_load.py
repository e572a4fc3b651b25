"""The prediction server under load: requests per second and latency with 1, 8 and 32 concurrent clients, against
prediction in one process on the same images; the server's resident memory after 100 and after N requests.

    cnncodes run --data ../shared/data/cifar10-exact --runtime onnx-int8 --out RUN --no-report
    python benchmarks/serve_load.py --model RUN --images ../shared/data/cifar10-exact/test [--requests 10000]
        [--rounds 3] [--baseline OTHER_CHECKOUT/src [--baseline-model OTHER_RUN]] [--server-cpus 0,1]
        [--json results/serve_load.json]

Each client sends one image per request, one request at a time (CIFAR PNGs of 32 x 32 pixels, and a 12-megapixel JPEG
made from one of them), on a keep-alive connection, its forms encoded beforehand; latency is measured by the client,
end to end. The clients run on the server's cores (each row says the CPU time per request of the server, of its
event loop, the main thread, and of the clients), unless --server-cpus gives the servers and the one-process
prediction CPUs of their own (Linux): the clients then run on the others, as other software calling a server would.
The small images go in `--rounds` rounds, each measuring the one-process throughput (500 images in one call) and then
each client count: a row gives the medians over the rounds, its share the median of each round's ratio (the
machine's drift hits both alike). --baseline: a second server, run from another checkout's code, measured in the
same rounds at each client count, before this one in every other round (a change's effect, on a noisy machine; the
server measured second at a client count did up to a tenth better, whatever its code: docs/benchmarks.md). Goals:
at 8 clients at least 80% of the one-process throughput; p99 of one 32-pixel image with one client at most 20 ms on 2
cores with an int8 model; memory flat between 100 and N requests.
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


def pin_threads(cpus: set[int] | None) -> None:
    """Every thread this process has now on `cpus` (threads made later inherit their maker's: the main thread's)."""
    if cpus:
        for thread in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(thread), cpus)
            except ProcessLookupError:  # it ended meanwhile
                pass


def server(model: str, src: str | None = None):
    """A `cnncodes serve` process (with src: that checkout's src folder's code) and its URL, once it answers. It runs
    on the CPUs of the thread that starts it (--server-cpus: main() pins its threads to them first)."""
    import httpx

    port = free_port()
    env = dict(os.environ, CNNCODES_NO_REEXEC="1") | ({"PYTHONPATH": str(Path(src).resolve())} if src else {})
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


def cpu_seconds(pid: int, main_thread: bool = False) -> float:
    """User + system CPU time of a process so far (main_thread: of its main thread only, where `cnncodes serve` runs
    the event loop: HTTP, the form, the JSON answer)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat").read_text()
    fields = fields.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def multipart(blob: bytes) -> tuple[bytes, str]:
    """The body and content type of a form with one image as field `file`, encoded once: the clients spend
    their CPU on sending, not on encoding (they share the server's cores)."""
    boundary = "cnncodes-load-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"image\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + blob + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def load(url: str, bodies: list[tuple[bytes, str]], clients: int, requests: int, server_pid: int,
         cpus: set[int] | None = None) -> dict:
    """`requests` requests from `clients` threads, each on its own keep-alive connection (the standard library's
    http.client: little CPU per request beside the server's, on the same cores unless `cpus` gives the clients
    theirs): throughput, latency, and the CPU time the server and the clients took per request."""
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

    server_cpu, loop_cpu = cpu_seconds(server_pid), cpu_seconds(server_pid, main_thread=True)
    own_cpu, t0 = time.process_time(), time.perf_counter()
    home = os.sched_getaffinity(0) if cpus else None
    if cpus:
        os.sched_setaffinity(0, cpus)  # the main thread's, inherited by the clients' threads
    try:
        with ThreadPoolExecutor(clients) as pool:
            latencies = np.concatenate([np.array(t) for t in pool.map(client, range(clients))])
    finally:
        if home:
            os.sched_setaffinity(0, home)
    seconds = time.perf_counter() - t0
    return {"clients": clients, "requests": requests, "per_second": requests / seconds,
            "p50_ms": float(np.percentile(latencies, 50) * 1000), "p99_ms": float(np.percentile(latencies, 99) * 1000),
            "server_cpu_ms": (cpu_seconds(server_pid) - server_cpu) / requests * 1000,
            "loop_cpu_ms": (cpu_seconds(server_pid, main_thread=True) - loop_cpu) / requests * 1000,
            "clients_cpu_ms": (time.process_time() - own_cpu) / requests * 1000}


def cpu_list(text: str) -> set[int]:
    """--server-cpus: CPU numbers separated by commas."""
    try:
        cpus = {int(v) for v in text.split(",") if v.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"not CPU numbers separated by commas: {text!r}") from None
    if not cpus or min(cpus) < 0:
        raise argparse.ArgumentTypeError(f"give CPU numbers of 0 or more (got {text!r})")
    return cpus


def medians(rounds: list[dict]) -> dict:
    """One row from the same level's rounds: the median of each number."""
    return rounds[0] | {key: float(np.median([r[key] for r in rounds])) for key in rounds[0]
                        if isinstance(rounds[0][key], float)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a run folder or model.onnx")
    parser.add_argument("--images", required=True, help="a folder of small images (CIFAR-10 PNGs)")
    parser.add_argument("--requests", type=int, default=10000, help="requests of the memory check")
    parser.add_argument("--per-level", type=int, default=400, help="requests per client count and round (a tenth "
                        "for 12 MP, in one round)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the small images")
    parser.add_argument("--baseline", default=None, help="another checkout's src folder: its server in the same rounds")
    parser.add_argument("--baseline-model", default=None, help="the baseline server's model (default --model): a run "
                        "made by the baseline's code, where the model file changed between the two")
    parser.add_argument("--server-cpus", type=cpu_list, default=None, help="CPUs for the servers and the one-process "
                        "prediction, e.g. 0,1 (Linux); the clients run on the others this process may use")
    parser.add_argument("--json", default=None)
    a = parser.parse_args()
    from PIL import Image

    server_cpus = client_cpus = None
    if a.server_cpus:
        if not hasattr(os, "sched_setaffinity"):
            parser.error("--server-cpus needs Linux (os.sched_setaffinity)")
        allowed = os.sched_getaffinity(0)
        server_cpus, client_cpus = a.server_cpus, allowed - a.server_cpus
        if not server_cpus <= allowed or not client_cpus:
            parser.error(f"--server-cpus must be some, not all, of the CPUs this process may use: {sorted(allowed)}")
        pin_threads(server_cpus)  # the one-process prediction's threads, made now and later, on the servers' CPUs

    paths = list_images([a.images])[:500]
    small = [p.read_bytes() for p in paths]
    buffer = io.BytesIO()
    Image.open(paths[0]).convert("RGB").resize((4000, 3000), Image.BICUBIC).save(buffer, "JPEG", quality=90)
    phone = [multipart(buffer.getvalue())]
    small_forms = [multipart(blob) for blob in small]

    predictor = Predictor(a.model)
    predictor(small[:8])  # warm

    def one_process() -> dict:
        t0, cpu0 = time.perf_counter(), time.process_time()
        predictor(small)
        measured = {"per_second": len(small) / (time.perf_counter() - t0),
                    "cpu_ms": (time.process_time() - cpu0) / len(small) * 1000}
        print(f"one process, a call of {len(small)} small images: {measured['per_second']:.1f} images/s, "
              f"{measured['cpu_ms']:.1f} CPU ms per image", flush=True)
        return measured

    phone_requests = max(8, a.per_level // 10)
    servers = {"this": server(a.model)} | ({"baseline": server(a.baseline_model or a.model, a.baseline)}
                                           if a.baseline else {})
    proc, url = servers["this"]
    try:
        for other, address in servers.values():
            load(address, small_forms, 1, 20, other.pid, client_cpus)  # warm
        offline, measured = [], []
        for round_number in range(a.rounds):
            offline.append(one_process())
            order = list(servers.items())[::-1 if round_number % 2 else 1]  # each server first in every other round
            for clients in (1, 8, 32):
                for name, (other, address) in order:
                    row = load(address, small_forms, clients, a.per_level, other.pid, client_cpus)
                    row |= {"image": "32 px PNG"}
                    measured.append(row | {"share": row["per_second"] / offline[-1]["per_second"], "server": name})
                    print(json.dumps(measured[-1]), flush=True)
        rows = [medians([r for r in measured if r["clients"] == clients and r["server"] == name])
                for name in servers for clients in (1, 8, 32)]
        for clients in (1, 8):
            rows.append(load(url, phone, clients, phone_requests, proc.pid, client_cpus) | {"image": "12 MP JPEG"})
            print(json.dumps(rows[-1]), flush=True)
        memory = {"after_100": None, "after_n": None}
        load(url, small_forms, 8, 100, proc.pid, client_cpus)
        memory["after_100"] = rss_mb(proc.pid)
        load(url, small_forms, 8, a.requests, proc.pid, client_cpus)
        memory["after_n"] = rss_mb(proc.pid)
        served = 20 + sum(r["requests"] for r in measured if r["server"] == "this") + 2 * phone_requests + 100
        print(f"resident memory: {memory['after_100']:.0f} MB after 100 requests, {memory['after_n']:.0f} MB after "
              f"{served + a.requests:,}", flush=True)
    finally:
        for other, _ in servers.values():
            other.terminate()
            other.wait(30)
    print(f"\none process: {np.median([o['per_second'] for o in offline]):.1f} images/s (median of {a.rounds})"
          + (f"; the servers and one process on CPUs {sorted(server_cpus)}, the clients on {sorted(client_cpus)}"
             if server_cpus else ""))
    print("\n| server | image | clients | requests/s | p50 ms | p99 ms | share of one-process throughput "
          "| server CPU ms per request | of which the event loop | clients' CPU ms per request |"
          "\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = f"{r['share'] * 100:.0f}%" if "share" in r else ""
        print(f"| {r.get('server', 'this')} | {r['image']} | {r['clients']} | {r['per_second']:.1f} "
              f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {share} | {r['server_cpu_ms']:.1f} "
              f"| {r['loop_cpu_ms']:.1f} | {r['clients_cpu_ms']:.1f} |")
    if a.baseline:
        for clients in (1, 8, 32):
            this, other = ([r["per_second"] for r in measured if r["clients"] == clients and r["server"] == name]
                           for name in ("this", "baseline"))
            print(f"{clients} client{'s' * (clients > 1)}: this server's throughput / the baseline's, median of the "
                  f"rounds: {np.median(np.array(this) / np.array(other)):.2f}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        cpus = {"server_cpus": sorted(server_cpus), "client_cpus": sorted(client_cpus)} if server_cpus else {}
        Path(a.json).write_text(json.dumps({"one_process": offline, "rounds": measured, "rows": rows,
                                            "memory_mb": memory} | cpus, indent=1))


if __name__ == "__main__":
    main()

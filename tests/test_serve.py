"""`cnncodes serve` as other software meets it: a real server on a free loopback port, real HTTP requests."""
import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from .conftest import cli, free_port, start_server

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytestmark = pytest.mark.slow  # HTTP behaviour: once, not again in the fp32 pass


def start(model, *args):
    return start_server("serve", model, *args, ready="/health")


def png(rgb=(200, 30, 30), size=32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, "PNG")
    return buf.getvalue()


def bomb() -> bytes:
    """A small PNG whose header claims 30,000 x 30,000 pixels (900 megapixels)."""
    raw = bytearray(png())
    ihdr = struct.pack(">II", 30000, 30000) + bytes(raw[24:29])
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(raw)


@pytest.fixture(scope="module")
def server(tiny_run):
    proc, url = start(tiny_run, "--max-body-mb", "1", "--max-files", "5")
    yield url
    proc.terminate()
    proc.wait(30)


def test_health_and_one_and_several_images(server, tiny_folder):
    health = httpx.get(server + "/health").json()
    assert health["status"] == "ok" and health["classes"] == ["bars", "checkers", "discs"]
    disc = (tiny_folder / "discs" / "000.png").read_bytes()
    one = httpx.post(server + "/predict", files=[("file", ("disc.png", disc, "image/png"))])
    assert one.status_code == 200
    answer = one.json()
    assert answer["images"][0]["name"] == "disc.png" and answer["images"][0]["top"][0]["class"] == "discs"
    assert answer["milliseconds"] > 0
    one_class = httpx.post(server + "/predict?top_k=1", files=[("file", ("disc.png", disc, "image/png"))]).json()
    assert [t["class"] for t in one_class["images"][0]["top"]] == ["discs"] and len(answer["images"][0]["top"]) == 3
    for bad in ("0", "-1", "abc", "1.5", "%C2%B2", "%D9%A1", "9" * 5000):  # superscript two, Arabic-Indic one
        refused = httpx.post(server + f"/predict?top_k={bad}", files=[("file", ("disc.png", disc, "image/png"))])
        assert refused.status_code == 422 and "top_k" in refused.json()["error"], bad
    spelled = httpx.post(server + "/predict?explain=F&top_k=+2", files=[("file", ("disc.png", disc, "image/png"))])
    assert spelled.status_code == 200 and len(spelled.json()["images"][0]["top"]) == 2
    bars = (tiny_folder / "bars" / "000.png").read_bytes()
    several = httpx.post(server + "/predict", files=[("file", ("a.png", disc, "image/png")),
                                                     ("file", ("b.png", bars, "image/png")),
                                                     ("file", ("c.txt", b"not an image", "text/plain"))]).json()
    assert [i["name"] for i in several["images"]] == ["a.png", "b.png", "c.txt"]
    assert several["images"][1]["top"][0]["class"] == "bars" and "error" in several["images"][2]


def test_concurrent_requests_each_get_their_own_answers(server, tiny_folder):
    from concurrent.futures import ThreadPoolExecutor

    sent = [(f"{c}{n}.png", (tiny_folder / c / f"00{n}.png").read_bytes()) for c in ("bars", "discs") for n in range(3)]

    def ask(item):
        name, blob = item
        answer = httpx.post(server + "/predict", files=[("file", (name, blob, "image/png"))], timeout=60).json()
        return answer["images"][0]

    alone = [ask(item) for item in sent]  # one at a time: each request is a call of its own
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, sent * 3))  # at once: requests share calls
    assert [a["name"] for a in together] == [name for name, _ in sent * 3]
    for a, b in zip(together, alone * 3):
        assert a["top"][0]["class"] == b["top"][0]["class"]
        assert a["top"][0]["probability"] == pytest.approx(b["top"][0]["probability"], abs=1e-4)


def test_a_call_waits_briefly_for_requests_still_being_read_and_not_otherwise():
    import time

    from cnncodes.serve import Batcher

    calls, reading = [], [1]
    batcher = Batcher(lambda images: calls.append(list(images)) or [i.upper() for i in images],
                      reading=lambda: reading[0], linger=2.0)
    first = batcher.submit(["a"])
    time.sleep(0.1)  # the call waits: one request is still being read
    second = batcher.submit(["b"])
    reading[0] = 0
    assert first.result(5) == ["A"] and second.result(5) == ["B"] and calls == [["a", "b"]]
    started = time.perf_counter()
    assert batcher.submit(["c"]).result(5) == ["C"] and time.perf_counter() - started < 1.0  # nothing read: no wait


def test_the_batcher_answers_waiting_requests_in_one_call_and_survives_errors_and_cancels():
    import threading

    from cnncodes.serve import Batcher

    calls, gate = [], threading.Event()

    def predict(images):
        calls.append(list(images))
        gate.wait(10)
        if "boom" in images:
            raise ValueError("boom")
        return [image.upper() for image in images]

    def busy_then(*requests):
        """Hold the model busy with one request while these queue up; then let it go."""
        gate.clear()
        first = batcher.submit(["a"])
        while not calls or calls[-1] != ["a"]:
            pass
        futures = [batcher.submit(r) for r in requests]
        return first, futures

    batcher = Batcher(predict, max_images=4)
    first, waiting = busy_then(["b", "c"], ["d"], ["e", "f"])
    gate.set()
    assert first.result(10) == ["A"]
    assert [f.result(10) for f in waiting] == [["B", "C"], ["D"], ["E", "F"]]
    assert calls[1] == ["b", "c", "d", "e", "f"]  # one call; it stops taking requests once it has 4 images or more
    first, (failed, beside) = busy_then(["boom"], ["g"])
    gate.set()
    with pytest.raises(ValueError):
        failed.result(10)
    assert beside.result(10) == ["G"]
    assert calls[-3:] == [["boom", "g"], ["boom"], ["g"]]  # the shared call failed: each request again, alone
    first, (dropped, kept) = busy_then(["x"], ["y"])
    assert dropped.cancel()  # the client went away while it waited
    gate.set()
    assert kept.result(10) == ["Y"] and ["x"] not in calls and ["x", "y"] not in calls
    assert batcher.submit(["z"]).result(10) == ["Z"]  # still answering


def test_lanes_answer_while_another_lane_is_busy():
    import threading

    from cnncodes.serve import Batcher

    started, release = threading.Event(), threading.Event()

    def predict(images):
        if "slow" in images:
            started.set()
            release.wait(10)
        return [image.upper() for image in images]

    batcher = Batcher(predict, lanes=2)
    slow = batcher.submit(["slow"])
    assert started.wait(5)
    assert batcher.submit(["quick"]).result(5) == ["QUICK"]  # the second lane did not wait for the first's call
    assert not slow.done()
    release.set()
    assert slow.result(5) == ["SLOW"]


def test_a_lane_takes_its_share_of_the_requests_and_a_lone_request_does_not_wait_for_company():
    import threading
    import time

    from cnncodes.serve import Batcher

    calls = []

    def predict(images):
        calls.append((threading.current_thread().name, len(images)))
        time.sleep(0.05)
        return images

    batcher = Batcher(predict, lanes=2, reading=lambda: 1, linger=2.0)  # a request always "being read"
    started = time.perf_counter()
    assert batcher.submit(["a"]).result(5) == ["a"]
    assert time.perf_counter() - started < 1.0  # the one being read is the other lane's share: no waiting for it
    calls.clear()
    futures = [batcher.submit([n]) for n in range(40)]
    assert [f.result(10) for f in futures] == [[n] for n in range(40)]
    assert len({lane for lane, _ in calls}) == 2 and max(size for _, size in calls) <= 21  # half the 41 untaken


def test_a_lane_leaves_the_busy_lanes_their_share_of_the_waiting_requests():
    import threading
    import time

    from cnncodes.serve import Batcher

    release, calls, busy = {"slow0": threading.Event(), "slow1": threading.Event()}, [], threading.Semaphore(0)

    def predict(images):
        if images[0] in release:
            busy.release()
            release[images[0]].wait(10)
        else:
            calls.append(len(images))
        return images

    batcher = Batcher(predict, lanes=2)
    slow = [batcher.submit([name]) for name in release]
    assert busy.acquire(timeout=5) and busy.acquire(timeout=5)  # both lanes in a call
    waiting = [batcher.submit([n]) for n in range(4)]
    release["slow0"].set()
    slow[0].result(5)
    deadline = time.monotonic() + 5
    while batcher.waiting.qsize() > 2:  # the freed lane takes its share before the other lane is freed
        assert time.monotonic() < deadline, "the freed lane took none of the waiting requests"
        time.sleep(0.01)
    release["slow1"].set()
    assert [f.result(5) for f in waiting] == [[n] for n in range(4)]
    # the freed lane took half of the four, not all of them while the other lane was about to be free; then half of
    # the two left, and the last one
    assert sorted(calls) == [1, 1, 2]


def test_the_recent_peak_of_requests_in_flight_tells_one_client_from_several():
    from cnncodes.serve import RecentPeak

    now = [100.0]
    peak = RecentPeak(clock=lambda: now[0])
    for in_flight in (1, 1, 1):
        peak.arrived(in_flight)
        now[0] += 0.3
    assert peak.most() == 1  # one client: its requests come one at a time
    peak.arrived(3)
    now[0] += 0.5
    peak.arrived(1)
    assert peak.most() == 3  # several clients within the last second or two
    now[0] += 0.6
    peak.arrived(1)  # a new second: the last one's peak is still counted
    assert peak.most() == 3
    now[0] += 1.2
    peak.arrived(1)
    assert peak.most() == 1  # two quiet seconds later: one client again
    peak.arrived(2)
    now[0] += 5
    peak.arrived(1)  # after a pause the seconds before it do not count
    assert peak.most() == 1


def test_a_heatmap_on_request(server, tiny_folder):
    import base64

    disc = (tiny_folder / "discs" / "000.png").read_bytes()
    answer = httpx.post(server + "/predict?explain=true", files=[("file", ("disc.png", disc, "image/png")),
                                                                 ("file", ("c.txt", b"text", "text/plain"))],
                        timeout=120).json()  # the first map loads the network in PyTorch: seconds on a busy machine
    heat = Image.open(io.BytesIO(base64.b64decode(answer["images"][0]["heatmap_jpeg"])))
    assert heat.format == "JPEG" and heat.size == (448, 448) and "heatmap_jpeg" not in answer["images"][1]
    assert "heatmap_jpeg" not in httpx.post(server + "/predict", files=[("file", ("d.png", disc))]).json()["images"][0]


def test_bad_input_gets_a_4xx_with_the_reason_and_the_server_goes_on(server, tiny_folder):
    buf = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(buf, "PNG")
    noisy = buf.getvalue()
    cases = {
        "not an image": ([("file", ("x.jpg", b"hello", "image/jpeg"))], 422, "not an image"),
        "an empty upload": ([("file", ("e.jpg", b"", "image/jpeg"))], 422, "an empty file"),
        "truncated": ([("file", ("t.png", noisy[:len(noisy) // 2], "image/png"))], 422, "cannot decode"),
        "decompression bomb": ([("file", ("b.png", bomb(), "image/png"))], 422, "decompression bomb"),
        "too large a body": ([("file", ("big.png", os.urandom(2 * 2**20), "image/png"))], 413, "at most"),
        "too many files": ([("file", (f"{n}.png", png(), "image/png")) for n in range(6)], 413, "5 files"),
        "no file": ([("other", ("x.png", png(), "image/png"))], 400, "the form had 'other' (a file)"),
        "a file's name, not the file": ([("file", (None, "photo.jpg"))], 400, "'file' (text)"),
    }
    for name, (files, status, reason) in cases.items():
        response = httpx.post(server + "/predict", files=files)
        assert response.status_code == status, (name, response.text)
        assert reason in response.text, (name, response.text)
    def chunked():  # no Content-Length: the limit must hold while the body streams in
        yield b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n\r\n"
        for _ in range(40):
            yield os.urandom(2**16)
        yield b"\r\n--x--\r\n"

    streamed = httpx.post(server + "/predict", content=chunked(),
                          headers={"content-type": "multipart/form-data; boundary=x"})
    assert streamed.status_code == 413 and "exceeded" in streamed.text, streamed.text
    for kind in ("application/x-www-form-urlencoded", "image/png", None):  # curl --data-binary, a raw image, nothing
        raw = httpx.post(server + "/predict", content=png(), headers={"content-type": kind} if kind else {})
        assert raw.status_code == 415 and "curl -F file=@" in raw.json()["error"], (kind, raw.text)
    form = "multipart/form-data; boundary=x"
    malformed = {"empty": (form, b""), "no boundary": ("multipart/form-data", b"--x\r\n"),
                 "not multipart inside": (form, b"hello, world"), "another boundary": (form, b"--y\r\n"),
                 "cut short": (form, b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
                                     + png())}
    for name, (kind, content) in malformed.items():
        refused = httpx.post(server + "/predict", content=content, headers={"content-type": kind})
        assert refused.status_code == 400 and "not a multipart form" in refused.json()["error"], (name, refused.text)
    for method, where, status in (("GET", "/predict", 405), ("POST", "/predcit", 404)):  # in the server's shape
        wrong = httpx.request(method, server + where)
        assert wrong.status_code == status and "POST /predict" in wrong.json()["error"], (where, wrong.text)
    fine = httpx.post(server + "/predict", files=[("file", ("d.png", (tiny_folder / "discs" / "001.png").read_bytes(),
                                                            "image/png"))])
    assert fine.status_code == 200, "the server must serve normally after bad requests"


def test_the_form_parser_keeps_each_file_however_the_body_is_cut():
    from python_multipart.exceptions import FormParserError

    from cnncodes.serve import FormFiles, NoBoundary, TooManyParts

    kind = "multipart/form-data; boundary=b0und"
    looks_like_a_boundary = b"\r\n--b0unX\r\n--b0un\r\n-\r" + png()
    body = (b"--b0und\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nnot a file\r\n"
            b"--b0und\r\ncontent-disposition: form-data; name=\"file\"; filename=\"caf\xc3\xa9.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + looks_like_a_boundary + b"\r\n"
            b"--b0und\r\nContent-Disposition: form-data; name=\"other\"; filename=\"x.png\"\r\n\r\nnot kept\r\n"
            b"--b0und\r\nContent-Disposition: form-data; name=\"file\"; filename=\"caf\xe9\"\r\n\r\nbytes\r\n"
            b"--b0und--\r\n")
    for size in (len(body), 7, 3, 1):  # whole, in pieces, byte by byte: a header or a boundary split anywhere
        form = FormFiles(kind, max_parts=4)
        for start in range(0, len(body), size):
            form.write(body[start:start + size])
        assert form.files == [("caf\u00e9.png", looks_like_a_boundary), ("caf\u00e9", b"bytes")] and form.complete, size
    cut = FormFiles(kind, max_parts=4)
    cut.write(body[:-12])
    assert not cut.complete and len(cut.files) == 1  # the last file never ended: the server refuses the form
    with pytest.raises(TooManyParts, match="more than 3 files or fields"):
        FormFiles(kind, max_parts=3).write(body)
    with pytest.raises(NoBoundary):
        FormFiles("multipart/form-data", max_parts=3)
    with pytest.raises(FormParserError):  # another boundary than the Content-Type's
        FormFiles(kind, max_parts=3).write(body.replace(b"b0und", b"other"))


def test_where_a_server_cannot_listen_the_message_names_the_host_or_the_port(monkeypatch):
    import socket

    from cnncodes.errors import CnnCodesError
    from cnncodes.network import check_can_listen, url

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        cases = [("127.0.0.1", busy, "try --port"), ("locahost.invalid", 8000, "a typo?")]
        nonlocal_bind = Path("/proc/sys/net/ipv4/ip_nonlocal_bind")  # Linux's switch to bind any address
        if not (nonlocal_bind.exists() and nonlocal_bind.read_text().strip() == "1"):
            cases.append(("192.0.2.1", 8000, "not an address of this machine"))  # 192.0.2.1: for documentation
        for host, port, says in cases:
            with pytest.raises(CnnCodesError, match=says):
                check_can_listen(host, port)
        resolve = socket.getaddrinfo  # a name with two addresses (as localhost: ::1 and 127.0.0.1): the second taken
        monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, **kw: resolve("127.0.0.2", port, **kw)
                            + resolve("127.0.0.1", port, **kw))
        with pytest.raises(CnnCodesError, match="127.0.0.1.*try --port"):
            check_can_listen("both", busy)
    assert url("::1", 8000) == "http://[::1]:8000" and url("127.0.0.1", 80) == "http://127.0.0.1:80"


def test_the_page_and_the_openapi_description(server):
    page = httpx.get(server + "/")
    assert page.status_code == 200 and "Drop images here" in page.text and "bars, checkers, discs" in page.text
    assert 'id="token"' not in page.text  # no token to ask for
    spec = httpx.get(server + "/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"] and "heatmap_jpeg" in predict["description"]
    assert {p["name"] for p in predict["parameters"]} == {"explain", "top_k"} and "/health" in spec["paths"]
    answer = predict["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"label", "top", "unknown_score", "error"} <= set(answer["properties"]["images"]["items"]["properties"])
    assert {"400", "413", "415", "422"} <= set(predict["responses"]) and "security" not in predict  # no token
    assert httpx.get(server + "/health").json()["unknown_threshold"] > 0


def test_the_page_in_chromium_shows_the_classes_of_chosen_images(server, tiny_folder, tmp_path):
    from .browser import Browser

    browser = Browser(tmp_path / "profile")
    try:
        browser.open(server + "/")
        browser.choose_files("#pick", [tiny_folder / "discs" / "000.png", tiny_folder / "bars" / "000.png"])
        shown = browser.wait_for("document.querySelectorAll('#out .item').length === 2 && "
                                 "[...document.querySelectorAll('#out .item')].map(i => i.textContent)")
        assert any(t.startswith("000.png: discs") for t in shown) and any(t.startswith("000.png: bars") for t in shown)
        browser.evaluate("document.getElementById('explain').checked = true")
        browser.choose_files("#pick", [tiny_folder / "checkers" / "000.png"])
        heat = browser.wait_for("document.querySelectorAll('#out .item').length === 3 && "
                                "document.querySelector('#out .item img').src.slice(0, 23)")
        assert heat == "data:image/jpeg;base64,"
    finally:
        browser.close()


def test_a_token_is_refused_or_accepted_and_required_off_loopback(tiny_run):
    refused = cli("serve", tiny_run, "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 2 and "--token" in refused.stderr
    proc, url = start(tiny_run, "--token", "s3cret")
    try:
        assert 'id="token"' in httpx.get(url + "/").text  # the page asks for it, and sends it as the bearer token
        files = [("file", ("d.png", png(), "image/png"))]
        assert httpx.post(url + "/predict", files=files).status_code == 401
        assert httpx.post(url + "/predict", files=files, headers={"Authorization": "Bearer wrong"}).status_code == 401
        malformed = httpx.post(url + "/predict?explain=maybe", files=files)  # the token comes first
        assert malformed.status_code == 401 and "needs a token" in malformed.json()["error"]
        wrong = httpx.post(url + "/predict", files=files, headers={"Authorization": "Bearer wrong"})
        assert "does not hold this server's token" in wrong.json()["error"]
        malformed = httpx.post(url + "/predict?explain=maybe", files=files, headers={"Authorization": "Bearer s3cret"})
        assert malformed.status_code == 422 and "query explain" in malformed.json()["error"], malformed.text
        assert httpx.post(url + "/predict", files=files, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        spec = httpx.get(url + "/openapi.json").json()  # /docs gets an Authorize button for the token
        assert spec["paths"]["/predict"]["post"]["security"] == [{"bearer": []}]
        assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_page_of_a_server_with_a_token_sends_the_token_typed_in(tiny_run, tiny_folder, tmp_path):
    from .browser import Browser

    proc, url = start(tiny_run, "--token", "s3cret")
    browser = None
    try:
        browser = Browser(tmp_path / "profile")
        browser.open(url + "/")
        shown = []
        for typed, image in (("", "000.png"), ("wrong", "001.png"), ("s3cret", "002.png")):  # each a new file
            browser.evaluate(f"document.getElementById('token').value = '{typed}'")
            browser.choose_files("#pick", [tiny_folder / "discs" / image])
            shown.append(browser.wait_for(f"document.querySelectorAll('#out p, #out .item').length === {len(shown) + 1}"
                                          " && document.querySelector('#out > *').textContent"))
        assert "token first" in shown[0] and "token" in shown[1] and shown[2].startswith("002.png: discs"), shown
    finally:
        if browser is not None:
            browser.close()
        proc.terminate()
        proc.wait(30)

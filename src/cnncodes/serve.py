"""`cnncodes serve`: a saved model behind HTTP, for other software (FastAPI on uvicorn). (No postponed annotations
here: FastAPI reads the endpoints' parameter types at run time.)

    GET  /          a page to drop images on and see their classes
    GET  /health    the model's name, backbone and classes, and the unknown threshold
    POST /predict   one or more images as multipart field `file` -> for each: name, label (the top class or
                    "unknown": none of these), top classes, the unknown score; and the time taken;
                    ?top_k=N: N top classes (default 5); ?explain=true adds a heatmap (JPEG, base64) of where
                    the network saw its top class
    GET  /docs      the OpenAPI description (FastAPI's)

The model is loaded once. Requests that arrive while it is busy are answered together by one call of the model
(`Batcher`): most of one image's time is per call (a network pass, a comparison with every reference code), so
concurrent clients share it; under load one call runs per core at a time, each on its own core (lanes).
Heatmaps run in the server's thread pool, at most one per core at a time.
Bad input (not an image, truncated, a decompression bomb, too large a body, too many files, no file) gets a 4xx
JSON answer with the reason, and the server goes on. It never fetches anything: images come in the request body.
"""

import hmac
import html
import queue
import re
import threading
import time
from concurrent.futures import Future
from contextlib import aclosing
from dataclasses import replace

from .errors import CnnCodesError
from .network import check_can_listen, is_loopback, url
from .outputs.page import html_page

MAX_BODY_MB = 50
MAX_FILES = 64
BATCH_IMAGES = 64  # images answered by one call of the model at most (a call of one request may have more)
LINGER_SECONDS = 0.005  # how long a call waits for requests the server is still reading (Batcher)


class Batcher:
    """Answers requests with one call of `predict` (a list of images -> a list of answers, in order) for the
    requests waiting when a lane is free: a busy server batches by itself, an idle one answers at once (no waiting
    for company). `lanes` threads call the model, each taking its own requests: with one call per core, no core
    waits for another's images or for the call's one-threaded parts (the unknown score, the answers) to end. A lane
    takes its share of the requests not yet taken (those waiting or still being read, `reading()`): 1/lanes of them,
    leaving the rest to the other lanes, idle or about to be (a lane that took every waiting request left the next
    one to free up idle until its clients came back: docs/benchmarks.md). A call short of its share waits for the
    requests being read up to `linger` seconds (the clients answered by the last call send their next requests
    together, and one call for all of them costs less than one each). The event loop only waits on futures."""

    def __init__(self, predict, max_images: int = BATCH_IMAGES, reading=lambda: 0, linger: float = LINGER_SECONDS,
                 lanes: int = 1):
        self.predict, self.max_images, self.reading, self.linger = predict, max_images, reading, linger
        self.waiting: queue.Queue = queue.Queue()
        self.lanes = lanes
        for lane in range(lanes):
            threading.Thread(target=self._answer, name=f"cnncodes-lane-{lane}", daemon=True).start()

    def submit(self, images: list) -> Future:
        future = Future()
        self.waiting.put((images, future))
        return future

    def _answer(self) -> None:
        while True:
            try:
                self._answer_waiting()
            except BaseException:  # noqa: BLE001 - never: every future is settled inside; the thread must not die
                continue

    def _take(self, block: bool, timeout: float | None = None):
        """The next waiting request whose client still waits for it (a cancelled one is dropped), or None."""
        while True:
            try:
                images, future = self.waiting.get(block=block, timeout=timeout)
            except queue.Empty:
                return None
            if future.set_running_or_notify_cancel():
                return images, future

    def _answer_waiting(self) -> None:
        jobs = [self._take(block=True)]
        count, until = len(jobs[0][0]), time.perf_counter() + self.linger
        untaken = 1 + self.waiting.qsize() + self.reading()  # the first included
        share = -(-untaken // self.lanes)
        while count < self.max_images and len(jobs) < share:
            job = self._take(block=False)
            if job is None and self.reading() > 0 and time.perf_counter() < until:
                job = self._take(block=True, timeout=max(until - time.perf_counter(), 1e-4))
            if job is None:
                break
            jobs.append(job)
            count += len(job[0])
        try:
            answers = self.predict([image for images, _ in jobs for image in images])
        except Exception as exc:  # noqa: BLE001 - one request's failure must not fail the others of its call
            if len(jobs) == 1:
                jobs[0][1].set_exception(exc)  # it was alone already: no second try
                return
            for images, future in jobs:
                self._alone(images, future)
            return
        start = 0
        for images, future in jobs:
            future.set_result(answers[start:start + len(images)])
            start += len(images)

    def _alone(self, images: list, future: Future) -> None:
        try:
            future.set_result(self.predict(images))
        except Exception as exc:  # noqa: BLE001 - the request gets the error, the server goes on
            future.set_exception(exc)


class TooManyParts(ValueError):
    """A form of more parts than the server takes."""


class NoBoundary(ValueError):
    """A multipart Content-Type without the boundary that separates its parts."""


class FormFiles:
    """The files sent as one field of a multipart form, parsed as the body arrives (`write`) by python-multipart's
    parser: `files`, (file name, bytes) of each part of that field with a file name; the other parts are only named
    (`others`, for a message). Starlette's form (`Request.form`) cost the event loop more: each file went to a
    SpooledTemporaryFile inside a FormData (docs/benchmarks.md). More than `max_parts` parts raise TooManyParts; a
    Content-Type without a boundary, NoBoundary; a body that is not a multipart form, python-multipart's
    FormParserError; `complete` says whether the body reached the form's closing boundary."""

    def __init__(self, content_type: str, max_parts: int, field: str = "file"):
        from python_multipart.multipart import MultipartParser, parse_options_header

        boundary = parse_options_header(content_type)[1].get(b"boundary")
        if not boundary:
            raise NoBoundary(content_type)
        self.max_parts, self.field, self.parts, self.complete = max_parts, field, 0, False
        self.files: list[tuple[str, bytes]] = []
        self.others: list[str] = []  # the other parts, named for a message: 'image (a file)', 'file (text)'
        self.header_name, self.header_value, self.disposition, self.filename, self.data = b"", b"", b"", "", None
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_header_field": self._header_name, "on_header_value": self._header_value,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data, "on_part_end": self._end, "on_end": self._form_end})

    def write(self, chunk: bytes) -> None:
        self.parser.write(chunk)

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise TooManyParts(f"the form has more than {self.max_parts} files or fields")
        self.disposition, self.data = b"", None

    def _header_name(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]  # a header may come in pieces, as the body does

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def _header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        options = parse_options_header(self.disposition)[1]
        name, is_file = _text(options.get(b"name", b"")), b"filename" in options
        if is_file and name == self.field:
            self.filename, self.data = _text(options[b"filename"]), []
        else:
            self.others.append(f"{name!r} ({'a file' if is_file else 'text'})")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.data is not None:
            self.data.append(data[start:end])

    def _end(self) -> None:
        if self.data is not None:
            self.files.append((self.filename, b"".join(self.data)))
        self.data = None

    def _form_end(self) -> None:
        self.complete = True


def _text(value: bytes) -> str:
    """A form's name or file name: UTF-8, else Latin-1 (as Starlette's form reads them)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


class RecentPeak:
    """The most requests in flight at once over the last one to two seconds (kept on the event loop, read by the
    lanes): whether the server has lately had one client at a time. clock: seconds (time.monotonic)."""

    def __init__(self, clock=time.monotonic):
        self.clock, self.since = clock, clock()
        self.peaks = (0, 0)  # this second's and the last one's, replaced in one assignment: the lanes read it any time

    def arrived(self, in_flight: int) -> None:
        """A request arrived, leaving `in_flight` requests between arrival and answer."""
        now, (current, last) = self.clock(), self.peaks
        if now - self.since >= 1:  # a new second: this one's peak becomes the last one's (nothing, after a pause)
            current, last, self.since = 0, current if now - self.since < 2 else 0, now
        self.peaks = (max(current, in_flight), last)

    def most(self) -> int:
        return max(self.peaks)


def create_app(model_path, *, token: str | None = None, max_body_mb: float = MAX_BODY_MB,
               max_files: int = MAX_FILES, top_k: int = 5):
    """The ASGI application around one model (model.npz of a run, the run folder, or an exported model.onnx): POST
    /predict, and FastAPI's application for the rest."""
    from pathlib import Path

    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from python_multipart.exceptions import FormParserError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
    from starlette.routing import Route

    from .codes.runtime import cpu_count
    from .predict import Predictor

    path = Path(model_path)
    predictor = Predictor(path)
    predictor.warm()
    cores = max(1, cpu_count())
    slots = threading.BoundedSemaphore(cores)
    # The request of a server with one client at a time has its image's operators spread over every core; with
    # more clients each lane's call keeps to one core, where the model can (ONNX Runtime; torch's operators use every
    # core: one lane), even for a request alone for a moment: a spread call leaves ONNX Runtime's operator thread
    # spinning on the other core, taking it from a lane (docs/benchmarks.md)
    lanes = cores if predictor.one_core_calls else 1
    in_flight = [0]  # /predict requests between arrival and answer (counted on the event loop)
    reading = [0]  # of those, the ones not yet handed to the batcher
    peak = RecentPeak()

    every = len(predictor.class_names)  # the classes of each image, best first: each request keeps its own top_k

    def answer(images: list) -> list:
        if in_flight[0] <= 1 and peak.most() <= 1:
            return predictor(images, every)
        # busy: a lane's call on one core; with one lane, one core per image at most (no operators spread)
        return predictor(images, every, cores=1 if lanes > 1 else min(len(images), cores))

    batcher = Batcher(answer, reading=lambda: reading[0], lanes=lanes)
    max_bytes = int(max_body_mb * 2**20)
    limits = f"this server takes at most {max_files} files and {max_bytes:,} bytes per request: --max-files, " \
             "--max-body-mb"
    app = FastAPI(title="cnncodes", description=f"Predictions of {path.name} ({', '.join(predictor.class_names)})")

    made, unexplained = [], ""

    def explainer():
        """The model's activation maps, built on the first request that asks (None when it has none)."""
        nonlocal unexplained
        if not made:
            from .explain import Explainer

            try:
                made.append(Explainer.of(predictor))
            except CnnCodesError as exc:
                made.append(None)
                unexplained = str(exc)
        return made[0]

    def heatmap(blob: bytes, answer: str) -> str | None:
        import base64

        from .data.images import item_reader
        from .explain import heatmap_jpeg

        try:
            rgb, k = item_reader([blob])(0), predictor.class_names.index(answer)
            return base64.b64encode(heatmap_jpeg(explainer(), rgb, k)).decode()
        except Exception:  # noqa: BLE001 - a map that cannot be drawn leaves that image's answer without one
            return None

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def refusal(request: Request) -> JSONResponse | None:
        """The answer to a request refused before its query or body is read (no token or a wrong one, a body declared
        too large), or None: a client without the token learns only that (401), whatever else is wrong with it."""
        sent = request.headers.get("authorization", "")
        if token is not None and not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return error(401, "this server needs a token: send the header 'Authorization: Bearer TOKEN'" if not sent
                         else "the Authorization header does not hold this server's token ('Bearer TOKEN')")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            return error(413, f"the request body has {int(length):,} bytes; this server takes at most {max_bytes:,} "
                              "(--max-body-mb)")
        return None

    def query(request: Request) -> tuple[bool, int] | JSONResponse:
        """(explain, top_k) of the request's query, or the 422 answer saying what is wrong with it."""
        explain, classes = request.query_params.get("explain", "false"), request.query_params.get("top_k")
        wrong = ([] if explain.lower() in BOOLEAN else [f"query explain: {explain!r} is not a boolean (true or false)"])
        # ASCII digits only (int() takes other scripts' digits), at most 9 (int() refuses thousands)
        whole = classes is not None and re.fullmatch(r"\s*\+?[0-9]{1,9}\s*", classes)
        if classes is not None and not (whole and int(classes) >= 1):
            wrong.append(f"query top_k: {classes!r} is not a whole number of at least 1")
        if wrong:
            return error(422, "; ".join(wrong))
        return explain.lower() in TRUE, top_k if classes is None else int(classes)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": path.name, "backbone": predictor.backbone, "classes": predictor.class_names,
                "unknown_threshold": predictor.threshold}  # an unknown_score above it is answered "unknown"

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """404, 405 and the like in the server's own shape ({"error": ...}), saying where its API is."""
        where = (" (this server answers POST /predict with images as multipart field 'file'; GET /, /health, /docs)"
                 if exc.status_code in (404, 405) else "")
        return JSONResponse({"error": f"{exc.detail}{where}"}, status_code=exc.status_code, headers=exc.headers)

    async def predict(request: Request) -> JSONResponse:
        """POST /predict. A Starlette route, not a FastAPI endpoint: FastAPI's dependencies and its validation of the
        query cost the event loop CPU time on every request, shared with the lanes (docs/benchmarks.md); its
        description is added to the OpenAPI document below."""
        refused = refusal(request)
        if refused is not None:
            return refused
        asked = query(request)
        if isinstance(asked, JSONResponse):
            return asked
        in_flight[0] += 1
        peak.arrived(in_flight[0])
        try:
            return await answer_images(request, *asked)
        finally:
            in_flight[0] -= 1

    predict_route = Route("/predict", predict, methods=["POST"])
    app.router.routes.append(predict_route)  # in FastAPI's routes too: GET /predict answered 405, not 404

    frameworks = app.openapi  # FastAPI's OpenAPI document, made once: it describes only FastAPI's own endpoints

    def described() -> dict:
        document = frameworks()
        document["paths"]["/predict"] = {"post": predict_description(top_k, secured=token is not None)}
        if token is not None:  # /docs then has an Authorize button for the token
            document.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http", "scheme": "bearer"}
        return document

    app.openapi = described

    async def answer_images(request: Request, explain: bool, top_k: int) -> JSONResponse:
        if explain and explainer() is None:
            return error(400, unexplained)
        reading[0] += 1
        try:
            read = await read_images(request)
        finally:
            reading[0] -= 1
        if isinstance(read, JSONResponse):
            return read
        names, blobs = read
        import asyncio

        from starlette.concurrency import run_in_threadpool

        started = time.perf_counter()
        results = await asyncio.wrap_future(batcher.submit(blobs))

        def draw_maps():
            with slots:
                return [None if isinstance(r, str) else heatmap(blob, r.top[0][0]) for r, blob in zip(results, blobs)]

        maps = await run_in_threadpool(draw_maps) if explain else [None] * len(blobs)
        seconds = time.perf_counter() - started
        answers = [{"name": n, "error": r} if isinstance(r, str) else
                   {"name": n} | replace(r, top=r.top[:top_k]).as_dict() | ({"heatmap_jpeg": m} if m else {})
                   for n, r, m in zip(names, results, maps)]
        if all("error" in a for a in answers):
            return JSONResponse({"error": "no image could be used", "images": answers}, status_code=422)
        return JSONResponse({"images": answers, "milliseconds": round(seconds * 1000, 2)})

    async def read_images(request: Request):
        """(names, image bytes) of the request's form, or the 4xx answer saying what is wrong with it."""
        kind = request.headers.get("content-type", "")
        if not kind.lower().startswith("multipart/form-data"):  # a URL-encoded form would be parsed as fields
            return error(415, f"the body is {kind or 'of no Content-Type'}, not a multipart form: send each image "
                              "as form field 'file' (curl -F file=@photo.jpg URL/predict)")
        try:
            form, seen = FormFiles(kind, max_files), 0
            async with aclosing(request.stream()) as body:
                async for chunk in body:  # counted as it comes: a chunked body has no Content-Length
                    seen += len(chunk)
                    if seen > max_bytes:
                        return error(413, f"request body size exceeded: more than {max_bytes:,} bytes ({limits})")
                    form.write(chunk)
        except TooManyParts as exc:
            return error(413, f"{exc} ({limits})")
        except NoBoundary:
            return error(400, f"not a multipart form with images: the Content-Type ({kind}) names no boundary (curl "
                              "-F file=@photo.jpg URL/predict writes one)")
        except FormParserError as exc:
            return error(400, f"not a multipart form with images: {exc} (does the body use the boundary its "
                              "Content-Type names?)")
        except ClientDisconnect:
            return error(400, "the client went away before the whole body came")
        if not form.complete:
            return error(400, "not a multipart form with images: the body ends before the form's closing boundary")
        if not form.files:
            had = f" (the form had {', '.join(form.others[:5])}{' ...' if len(form.others) > 5 else ''})" \
                if form.others else ""
            return error(400, f"no image: send one or more files as multipart form field 'file'{had}; with curl, "
                              "-F file=@photo.jpg (the @ sends the file, not its name)")
        return [name or f"file{n}" for n, (name, _) in enumerate(form.files)], [data for _, data in form.files]

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        asks = TOKEN_FIELD if token is not None else ""  # the page sends what is typed as the bearer token
        return html_page("cnncodes", BODY.replace("{token}", asks)  # first: a class may be named {token}
                         .replace("{classes}", html.escape(", ".join(predictor.class_names))), STYLE)

    async def application(scope, receive, send) -> None:
        """The server: POST /predict straight to its route, the rest to FastAPI, whose middleware (telemetry, a body
        limit, an exit stack) would cost the event loop CPU on every prediction (docs/benchmarks.md)."""
        if scope["type"] == "http" and scope["path"] == "/predict" and scope["method"] == "POST":
            await predict_route.app(scope, receive, send)
        else:
            await app(scope, receive, send)

    return application


TRUE = {"true", "t", "1", "yes", "y", "on"}  # explain=, as FastAPI read it
BOOLEAN = TRUE | {"false", "f", "0", "no", "n", "off"}


def predict_description(top_k: int, secured: bool = False) -> dict:
    """The OpenAPI description of POST /predict (secured: clients send the server's token as a bearer token)."""
    files = {"type": "array", "items": {"type": "string", "format": "binary"}}
    form = {"type": "object", "properties": {"file": files}, "required": ["file"]}
    text, number = {"type": "string"}, {"type": "number"}
    top = {"type": "array", "items": {"type": "object", "properties": {"class": text, "probability": number}},
           "description": "classes, best first"}
    image = {"type": "object", "required": ["name"], "properties": {
        "name": text, "label": {"type": "string", "description": "the top class, or \"unknown\": none of these"},
        "top": top, "unknown": {"type": "boolean"},
        "unknown_score": {"type": "number", "description": "higher is less like the training images; above the "
                          "model's unknown_threshold (GET /health) the label is \"unknown\""},
        "heatmap_jpeg": {"type": "string", "format": "byte", "description": "with explain=true"},
        "error": {"type": "string", "description": "why the image was skipped (then the only field beside name)"}}}
    answer = {"type": "object", "properties": {"images": {"type": "array", "items": image}, "milliseconds": number}}
    refusal = {"type": "object", "properties": {"error": text}}
    why = {400: "not a multipart form, no file in field `file`, or explain=true for a model without heatmaps",
           401: "no token or a wrong one", 413: "too large a body or too many files",
           415: "the body is not a multipart form",
           422: "a malformed query, or no image could be used (then `images` says why for each)"}
    unusable = {"type": "object", "properties": {"error": text, "images": {"type": "array", "items": image}}}
    return {"summary": "Predict", "operationId": "predict", "description": "Top classes of each image sent as form "
            "field `file` (repeat the field for several images); with explain=true, also each image's class "
            "activation map as a base64 JPEG (`heatmap_jpeg`).",
            "parameters": [
                {"name": "explain", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
                 "description": "add a heatmap of where the network saw each image's top class"},
                {"name": "top_k", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "default": top_k}, "description": "classes per image, "
                 "best first"}],
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}},
            "responses": {"200": {"description": "for each image: name, label, top classes, unknown and its score "
                                                 "(and heatmap_jpeg, asked for), or the error that skipped it",
                                  "content": {"application/json": {"schema": answer}}}}
            | {str(status): {"description": reason, "content": {"application/json": {
                "schema": unusable if status == 422 else refusal}}} for status, reason in why.items()
               if status != 401 or secured}} \
        | ({"security": [{"bearer": []}]} if secured else {})


def serve(model_path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          max_body_mb: float = MAX_BODY_MB, max_files: int = MAX_FILES) -> None:
    try:
        import uvicorn
    except ImportError:
        raise CnnCodesError("cnncodes serve needs FastAPI and uvicorn: pip install 'cnncodes[serve]'") from None
    check_can_listen(host, port)  # first: a host name with a typo is not "reachable from other machines"
    if not is_loopback(host) and not token:
        raise CnnCodesError(f"--host {host} makes the server reachable from other machines: give --token SECRET "
                            "(clients send 'Authorization: Bearer SECRET'), or bind 127.0.0.1")
    # One BLAS thread for this process: its matrix products are small (a request's codes through the head; without
    # onnxruntime, against the reference codes), and OpenBLAS threads spin after each one, taking a core from the
    # network (benchmarks/predict_calls.py)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    import logging

    logging.getLogger("python_multipart").setLevel(logging.ERROR)  # a malformed form: the client is told why (400)
    app = create_app(model_path, token=token, max_body_mb=max_body_mb, max_files=max_files)
    print(f"serving {model_path} on {url(host, port)} (page /, API /predict, description /openapi.json, shown at "
          "/docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)  # (its lines are info: not shown)


STYLE = """body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;padding:0 1em}
#drop{border:3px dashed #888;border-radius:8px;padding:3em;text-align:center;color:#555}
#drop.over{border-color:#36c;color:#36c} .item{display:flex;gap:1em;align-items:center;margin:.5em 0}
.item img{width:96px;height:96px;object-fit:cover} .error{color:#b00}"""

TOKEN_FIELD = """<p><label>Token: <input type="password" id="token" autocomplete="off"></label></p>"""

BODY = """<h1>cnncodes</h1><p>Classes: {classes}</p>{token}
<div id="drop">Drop images here, or <input type="file" id="pick" multiple accept="image/*"></div>
<p><label><input type="checkbox" id="explain"> show where the network looked (heatmap of the top class)</label></p>
<div id="out"></div>
<script>
const drop = document.getElementById("drop"), out = document.getElementById("out");
function say(error) {
  out.prepend(Object.assign(document.createElement("p"), {className: "error", textContent: error}));
}
async function send(files) {
  const form = new FormData();
  for (const f of files) form.append("file", f);
  const explain = document.getElementById("explain").checked;
  const token = document.getElementById("token");
  if (token && !token.value) { say("type this server's token first"); return; }
  const headers = token ? {Authorization: "Bearer " + token.value} : {};
  let answer;
  try {
    answer = await (await fetch(explain ? "predict?explain=true" : "predict", {method: "POST", body: form, headers}))
      .json();
  } catch (e) { say("no answer: " + e.message); return; }
  const results = answer.images || [];
  if (!results.length) { say(answer.error); return; }
  results.forEach((r, n) => {
    const row = document.createElement("div"); row.className = "item";
    const img = document.createElement("img");
    img.src = r.heatmap_jpeg ? "data:image/jpeg;base64," + r.heatmap_jpeg : URL.createObjectURL(files[n]); row.append(img);
    const text = document.createElement("div");
    const classes = r.error ? "" : r.top.map(t => t.class + " " + (100 * t.probability).toFixed(1) + "%").join(", ");
    text.textContent = r.error ? r.name + ": " + r.error :
      r.name + ": " + (r.unknown ? "none of these (unknown, score " + r.unknown_score.toFixed(2) + "); nearest " : "") + classes;
    if (r.error) text.className = "error";
    row.append(text); out.prepend(row);
  });
}
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over"); send([...e.dataTransfer.files]); });
document.getElementById("pick").addEventListener("change", e => send([...e.target.files]));
</script>"""

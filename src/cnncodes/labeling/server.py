"""`cnncodes label DATA`: a local page for labelling a folder of photos, the images worth a label first (FastAPI on
uvicorn). (No postponed annotations here: FastAPI reads the endpoints' parameter types at run time.)

    GET  /              the page: a grid of images to label with the keyboard
    GET  /api/state     classes, how many images are labelled, the estimated accuracy and how it grew
    GET  /api/next      the next images worth a label (labeling.choose_to_label), each with the suggested class
    GET  /api/image     one image, as a small JPEG
    POST /api/label     {"answers": {path: class name}}: labels (new class names welcome); "" removes one
    POST /api/undo      takes back the last answer (or page of answers)
    POST /api/skip      {"paths": [...]}: not offered again in this session

Every answer is written to DATA/labels.csv at once (atomically), the manifest `--data` reads, so closing the page or
killing the server loses nothing and the next start resumes. Suggestions come from labels spread over the codes'
neighbour graph (labeling.propagate), recomputed after every answer in a fraction of a second.
"""

import io
import threading
from pathlib import Path

import numpy as np

from ..backbones import final_code_columns
from ..errors import CnnCodesError
from .choose import choose_to_label, reduce_codes
from .manifest import ChangedOutside, Manifest, check_class_name
from ..heads.base import unit_rows
from ..outputs.page import html_page
from .propagate import Propagation

PAGE_SIZE = 12


class LabellingSession:
    """A folder's codes, its manifest and what this session did (for undo and skip)."""

    def __init__(self, folder, *, backbone: str | None = None, cache_dir=None, progress: bool = True):
        from ..codes.extract import extract_codes
        from ..data.datasets import IMAGE_SUFFIXES, unlabelled_files

        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise CnnCodesError(f"{folder} is not a folder of images")
        images = sorted(p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*")
                        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(self.folder).parts))
        if not images:
            raise CnnCodesError(f"no image files in {folder}")
        self.manifest = Manifest(self.folder, images)
        dataset = unlabelled_files(self.folder, images, cache_dir=cache_dir)
        options = {"backbone": backbone} if backbone else {}
        self.codes = extract_codes(dataset, cache_dir=cache_dir, progress=progress, **options)
        self.paths = [str(i) for i in self.codes.ids]
        self.row = {p: n for n, p in enumerate(self.paths)}
        self.vectors = np.asarray(self.codes.vectors, np.float32)
        self.propagation = Propagation(self.vectors, parts=final_code_columns(self.codes.backbone))
        self.points = reduce_codes(self.vectors, columns=self.propagation.parts)  # what k-means clusters, once
        self.undo_stack, self.skipped, self.growth = [], set(), []
        self.lock = threading.Lock()

    def classes(self) -> list[str]:
        return sorted({label for label in self.manifest.labels().values() if label})

    def label_array(self, classes: list[str]) -> np.ndarray:
        index = {c: k for k, c in enumerate(classes)}
        labels = self.manifest.labels()
        return np.array([index.get(labels.get(p, ""), -1) for p in self.paths])

    def state(self) -> dict:
        classes = self.classes()
        labels = self.label_array(classes)
        done = int((labels >= 0).sum())
        accuracy = estimated_accuracy(self.vectors, labels)
        if accuracy is not None and (not self.growth or self.growth[-1][0] != done):
            self.growth.append((done, accuracy))
        return {"classes": classes, "labelled": done, "images": len(self.paths), "accuracy": accuracy,
                "growth": self.growth, "counts": {c: int((labels == k).sum()) for k, c in enumerate(classes)},
                "manifest": str(self.manifest.path), "can_undo": bool(self.undo_stack)}

    def next_images(self, n: int) -> list[dict]:
        classes = self.classes()
        labels = self.label_array(classes)
        offer = np.ones(len(labels), bool)
        offer[[self.row[p] for p in self.skipped if p in self.row]] = False
        picks = choose_to_label(self.vectors, labels, n, propagation=self.propagation, offer=offer,
                                points=self.points)
        scores = self.propagation.spread(labels, len(classes)) if len(classes) >= 1 else None
        out = []
        for i in picks:
            item = {"path": self.paths[i]}
            if scores is not None and len(classes) >= 2:
                k = int(scores[i].argmax())
                item |= {"suggestion": classes[k], "confidence": round(float(scores[i, k]), 4)}
            out.append(item)
        return out

    def answer(self, answers: dict) -> None:
        unknown = [p for p in answers if p not in self.row]
        if unknown:
            raise KeyError(f"no image {unknown[0]!r} in {self.folder}")
        answers = {p: check_class_name(label) if label else "" for p, label in answers.items()}
        before = {p: self.manifest.label(p) for p in answers}
        self.manifest.set(answers)
        self.undo_stack.append(before)

    def undo(self) -> bool:
        if not self.undo_stack:
            return False
        self.manifest.set(self.undo_stack[-1])
        self.undo_stack.pop()
        return True


def estimated_accuracy(codes: np.ndarray, labels: np.ndarray) -> float | None:
    """Cross-validated accuracy of a logistic regression on the labelled codes (None until each of two classes has
    two labels): what a head trained on these labels may get on new images."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    known = labels >= 0
    counts = np.bincount(labels[known]) if known.any() else np.zeros(0, int)
    counts = counts[counts > 0]
    if len(counts) < 2 or counts.min() < 2:
        return None
    folds = StratifiedKFold(int(min(5, counts.min())), shuffle=True, random_state=0)
    model = LogisticRegression(C=1.0, max_iter=500)
    return round(float(cross_val_score(model, unit_rows(codes[known]), labels[known], cv=folds).mean()), 4)


def create_app(session: LabellingSession):
    from fastapi import Body, FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    from starlette.middleware.trustedhost import TrustedHostMiddleware

    app = FastAPI(title="cnncodes label", description=f"Labelling {session.folder}")
    # other web pages open in the same browser must not label, undo or read photos: only this machine's names are
    # served (no DNS rebinding), and every change is a JSON POST (which a cross-site page cannot send unasked)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]", "::1"])

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def json_posts_only(request: Request, call_next):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method == "POST" and kind != "application/json":
            return error(415, "send JSON (Content-Type: application/json)")
        return await call_next(request)

    async def locked(work):
        def run():
            with session.lock:
                return work()
        return await run_in_threadpool(run)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return html_page("cnncodes label", BODY, STYLE)

    @app.get("/api/state")
    async def state():
        return await locked(session.state)

    @app.get("/api/next")
    async def next_images(n: int = PAGE_SIZE):
        if not 1 <= n <= 100:
            return error(400, "n must be between 1 and 100")
        return {"images": await locked(lambda: session.next_images(n))}

    @app.get("/api/image")
    async def image(path: str):
        if path not in session.row:
            return error(404, f"no image {path!r} in this collection")

        def thumbnail() -> bytes:
            from PIL import Image

            from ..data.images import load_rgb

            picture = Image.fromarray(load_rgb(session.folder / path, 256))
            picture.thumbnail((256, 256))
            buffer = io.BytesIO()
            picture.save(buffer, "JPEG", quality=85)
            return buffer.getvalue()

        try:
            return Response(await run_in_threadpool(thumbnail), media_type="image/jpeg")
        except Exception as exc:  # noqa: BLE001 - a file that became unreadable: say so, keep serving
            return error(422, f"cannot show {path}: {exc}")

    @app.post("/api/label")
    async def label(request: Request):
        try:
            body = await request.json()
            answers = body["answers"]
            if not isinstance(answers, dict) or not all(isinstance(v, str) for v in answers.values()):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return error(400, 'send JSON {"answers": {"path": "class name", ...}}')
        try:
            await locked(lambda: session.answer(answers))
        except KeyError as exc:
            return error(404, str(exc.args[0]))
        except ChangedOutside as exc:
            return error(409, str(exc))
        except CnnCodesError as exc:
            return error(400, str(exc))
        return await locked(session.state)

    @app.post("/api/undo")
    async def undo():
        try:
            undone = await locked(session.undo)
        except ChangedOutside as exc:
            return error(409, str(exc))
        return {"undone": undone} | await locked(session.state)

    @app.post("/api/skip")
    async def skip(paths: list = Body(..., embed=True)):
        def add():
            session.skipped.update(p for p in paths if isinstance(p, str))
            return {"skipped": len(session.skipped)}
        return await locked(add)

    return app


def label(folder, host: str = "127.0.0.1", port: int = 8000, backbone: str | None = None, cache_dir=None,
          progress: bool = True) -> None:
    try:
        import uvicorn
    except ImportError:
        raise CnnCodesError("cnncodes label needs FastAPI and uvicorn: pip install 'cnncodes[serve]'") from None
    from ..network import check_can_listen, is_loopback, url

    check_can_listen(host, port)  # first: a host name with a typo gets its own message
    if not is_loopback(host):
        raise CnnCodesError(f"--host {host}: the labelling page has no access control, so it listens on this machine "
                            "only (127.0.0.1)")
    session = LabellingSession(folder, backbone=backbone, cache_dir=cache_dir, progress=progress)
    print(f"labelling {session.folder} ({len(session.paths)} images, answers in {session.manifest.path}): "
          f"open {url(host, port)}", flush=True)
    uvicorn.run(create_app(session), host=host, port=port, log_level="warning")


STYLE = """body{font-family:system-ui,sans-serif;margin:1em 2em;color:#222} #grid{display:grid;grid-template-columns:repeat(auto-fill,180px);gap:10px}
.card{border:3px solid #ddd;border-radius:6px;padding:4px;text-align:center;font-size:13px}
.card img{width:168px;height:168px;object-fit:contain;background:#f4f4f4} .card.focus{border-color:#36c}
.card.done{opacity:.35} #status{margin:.5em 0} .error{color:#b00} kbd{border:1px solid #aaa;border-radius:3px;padding:0 3px}
#classes span{margin-right:1em}"""

BODY = """<h1>cnncodes label</h1>
<p id="status"></p><p id="classes"></p><p id="message" class="error"></p>
<p><kbd>1</kbd>-<kbd>9</kbd> or a class's first letter: label the framed image; <kbd>Enter</kbd>: take its suggestion;
<kbd>Shift</kbd>+<kbd>Enter</kbd>: take the suggestions of the whole page; <kbd>+</kbd>: a new class;
<kbd>Space</kbd>: skip; <kbd>Backspace</kbd>: undo; arrow keys: move.</p>
<div id="grid"></div>
<script>
let classes = [], counts = {}, items = [], focus = 0;
const $ = id => document.getElementById(id);
async function call(url, body) {
  const answer = await fetch(url, body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await answer.json();
  $("message").textContent = answer.ok ? "" : (data.error || answer.statusText);
  if (answer.status === 409) await load();
  return answer.ok ? data : null;
}
function show(state) {
  classes = state.classes; counts = state.counts;
  const acc = state.accuracy === null ? "not yet (two labels in each of two classes)" : (100 * state.accuracy).toFixed(1) + "%";
  $("status").textContent = `${state.labelled} of ${state.images} images labelled; estimated accuracy (cross-validated): ${acc}`;
  $("classes").replaceChildren(...classes.map((c, k) => Object.assign(document.createElement("span"), {textContent: `${k + 1}: ${c} (${state.counts[c]})`})));
}
async function load() {
  show(await call("api/state"));
  items = (await call("api/next")).images; focus = 0; draw();
}
function draw() {
  $("grid").replaceChildren(...items.map((item, n) => {
    const card = document.createElement("div");
    card.className = "card" + (n === focus ? " focus" : "") + (item.answer ? " done" : "");
    card.dataset.path = item.path;
    const img = document.createElement("img"); img.src = "api/image?path=" + encodeURIComponent(item.path);
    const text = document.createElement("div");
    const votes = counts[item.suggestion];  // a suggestion from one or two labels is a guess, whatever its share
    text.textContent = item.answer ? item.answer : (item.suggestion ?
      `${item.suggestion}? ${(100 * item.confidence).toFixed(0)}% (${votes} label${votes === 1 ? "" : "s"})` : item.path);
    card.append(img, text); card.onclick = () => { focus = n; draw(); };
    return card;
  }));
}
async function answer(answers) {
  const state = await call("api/label", {answers});
  if (!state) return;
  for (const item of items) if (item.path in answers) item.answer = answers[item.path];
  show(state); advance();
}
async function advance() {
  const open = items.findIndex(item => !item.answer && !item.skipped);
  if (open < 0) return load();
  focus = open; draw();
}
document.addEventListener("keydown", async e => {
  const item = items[focus];
  if (!item || e.target.tagName === "INPUT") return;
  if (e.key === "Enter" && e.shiftKey) {
    const all = Object.fromEntries(items.filter(i => !i.answer && !i.skipped && i.suggestion).map(i => [i.path, i.suggestion]));
    if (Object.keys(all).length) await answer(all);
  } else if (e.key === "Enter" && item.suggestion) { await answer({[item.path]: item.suggestion}); }
  else if (/^[1-9]$/.test(e.key) && classes[+e.key - 1]) { await answer({[item.path]: classes[+e.key - 1]}); }
  else if (e.key === "+") { const name = prompt("new class name"); if (name) await answer({[item.path]: name}); }
  else if (e.key === " ") { e.preventDefault(); item.skipped = true; await call("api/skip", {paths: [item.path]}); advance(); }
  else if (e.key === "Backspace") { e.preventDefault(); if (await call("api/undo", {})) await load(); }
  else if (e.key === "ArrowRight" || e.key === "ArrowDown") { focus = Math.min(items.length - 1, focus + 1); draw(); }
  else if (e.key === "ArrowLeft" || e.key === "ArrowUp") { focus = Math.max(0, focus - 1); draw(); }
  else if (e.key.length === 1 && /\\p{L}/u.test(e.key)) {
    const match = classes.filter(c => c.toLowerCase().startsWith(e.key.toLowerCase()));
    if (match.length === 1) await answer({[item.path]: match[0]});
  }
});
load();
</script>"""

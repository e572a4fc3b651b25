"""The command line end to end on a small real-image folder, and its one-line errors."""
import json
import os
import struct
import subprocess
import sys
import zlib

import pytest

from cnncodes.cli import main

from .conftest import cli


def is_png(path) -> bool:
    raw = path.read_bytes()
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    width, height = struct.unpack(">II", raw[16:24])
    return 200 <= width <= 4000 and 150 <= height <= 4000 and zlib.crc32(raw[12:29]) == struct.unpack(">I", raw[29:33])[0]


@pytest.fixture(scope="module")
def finished_run(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = cli("run", "--data", tiny_folder, "--backbone", "efficientnet_lite0", "--out", out)
    assert result.returncode == 0, result.stderr
    return out, result


def test_run_writes_model_metrics_curve_and_report(finished_run):
    out, result = finished_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9  # three very different synthetic classes
    assert set(metrics["per_class"]) == {"bars", "checkers", "discs"}
    assert "test accuracy" in result.stdout and "report.html" in result.stdout
    for name in ("model.npz", "settings.json", "curve.json", "skipped.tsv"):
        assert (out / name).exists()
    # the runtime decided for this machine, never "auto": the model computes new codes as its codes were computed
    settings = json.loads((out / "settings.json").read_text())
    assert settings["runtime"] in ("torch", "onnx", "onnx-int8")
    assert settings["head"] == "tuned" and "head: the tuned head: 45 labelled images (train and validation) are fewer" in result.stdout
    assert "the threshold was set on 45 images, so the share" in result.stdout  # a rough 'none of these' says so


def test_report_references_every_picture_and_each_is_a_real_png(finished_run):
    out, _ = finished_run
    page = (out / "report.html").read_text()
    pictures = ["sample.png", "learning_curve.png", "tsne.png", "tsne_thumbnails.png", "confusion.png",
                "per_class.png", "mistakes.png"]
    for name in pictures:
        assert is_png(out / name), name
        assert f'src="{name}"' in page


def test_report_command_rebuilds_the_page(finished_run):
    out, _ = finished_run
    (out / "report.html").unlink()
    result = cli("report", out)
    assert result.returncode == 0, result.stderr
    assert (out / "report.html").exists()


def test_train_after_run_leaves_no_files_of_the_first_run(tiny_folder, tmp_path):
    run = cli("run", "--data", tiny_folder, "--out", tmp_path)
    assert run.returncode == 0 and "see the 95% interval below" in run.stdout  # a test split of under 100 images
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "report.html").exists()
    train = cli("train", "--data", tiny_folder, "--head", "sgd", "--out", tmp_path)
    assert train.returncode == 0 and "interval" not in train.stdout  # train never scores the test split
    left = {p.name for p in tmp_path.iterdir()}
    graphs = {"graphs"} if json.loads((tmp_path / "settings.json").read_text())["runtime"] != "torch" else set()
    assert left == {"model.npz", "settings.json", "curve.json", "skipped.tsv"} | graphs, left  # the ONNX graphs of its codes


def test_report_only_reads_the_run_folder(tiny_folder, tmp_path, monkeypatch):
    """The run computes what the report draws; rebuilding the report needs neither the images nor the codes."""
    monkeypatch.setenv("CNNCODES_RUNTIME", "torch")  # about the report, in a fresh cache: no ONNX graph export
    import shutil

    data, cache = tmp_path / "data", tmp_path / "cache"
    shutil.copytree(tiny_folder, data)
    out = tmp_path / "run"
    assert cli("run", "--data", data, "--cache-dir", cache, "--out", out).returncode == 0
    shutil.rmtree(data)
    shutil.rmtree(cache)
    for picture in out.glob("*.png"):
        picture.unlink()
    result = cli("report", out)
    assert result.returncode == 0, result.stderr
    for name in ("sample.png", "tsne.png", "tsne_thumbnails.png", "mistakes.png", "data_efficiency.png"):
        assert is_png(out / name), name


def test_predict_prints_top_classes_and_skips_bad_files(finished_run, tiny_folder, tmp_path):
    out, _ = finished_run
    bad = tmp_path / "bad.jpg"
    bad.write_text("no")
    result = cli("predict", out / "model.npz", tiny_folder / "discs" / "000.png", bad, "--top-k", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split(": ")[1].startswith("discs")
    assert "skipped" in lines[1]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_predict_a_folder_into_a_file(finished_run, tiny_folder, tmp_path, fmt, monkeypatch):
    """Bulk prediction streams CHUNK images at a time (a small CHUNK here, so several chunks run) into a file
    with one row per image, unreadable files listed with their reason."""
    import csv
    import shutil

    from cnncodes import predict
    from cnncodes.cli import main

    out, _ = finished_run
    folder = tmp_path / "photos"
    shutil.copytree(tiny_folder / "discs", folder / "discs")
    (folder / "broken.jpg").write_text("not an image")
    monkeypatch.setattr(predict, "CHUNK", 7)
    target = tmp_path / f"predictions.{fmt}"
    assert main(["--quiet", "predict", str(out / "model.npz"), str(folder), "--out", str(target), "--format", fmt,
                 "--top-k", "2"]) == 0
    if fmt == "csv":
        rows = list(csv.DictReader(target.open()))
        assert list(rows[0]) == ["path", "label", "unknown_score", "class_1", "probability_1", "class_2",
                                 "probability_2", "error"]
        good = [r for r in rows if not r["error"]]
        assert [r["path"] for r in rows if r["error"]] == [str(folder / "broken.jpg")]
        assert sum(r["class_1"] == "discs" for r in good) >= 0.9 * len(good)
    else:
        rows = json.loads(target.read_text())
        good = [r for r in rows if "top" in r]
        assert [r["path"] for r in rows if "error" in r] == [str(folder / "broken.jpg")]
        assert sum(r["top"][0]["class"] == "discs" for r in good) >= 0.9 * len(good)
    assert len(rows) == 21 and len(good) == 20


def test_extract_then_tsne(tiny_folder, tmp_path):
    assert cli("extract", "--data", tiny_folder, "--out", tmp_path).returncode == 0
    result = cli("tsne", tmp_path / "codes.npz", "--out", tmp_path / "map", "--split", "all")
    assert result.returncode == 0, result.stderr
    assert is_png(tmp_path / "map" / "tsne.png")


def test_sgd_head_and_evaluate(tiny_folder, tmp_path):
    """train never touches the test split; evaluate rebuilds the run's splits from the model file (seed and test
    share included) and its numbers are the head's predictions on those test codes."""
    import shutil

    import numpy as np

    from cnncodes import extract_codes, load_dataset
    from cnncodes.heads.model_file import load_model_file

    args = ["--data", tiny_folder, "--seed", "3", "--test-percent", "30"]
    assert cli("train", *args, "--head", "sgd", "--eval-every", "1", "--out", tmp_path).returncode == 0
    curve = json.loads((tmp_path / "curve.json").read_text())
    assert curve["mode"] == "sgd" and len(curve["curve"]) > 3
    assert not (tmp_path / "metrics.json").exists()
    refused = cli("evaluate", tmp_path / "model.npz", "--data", tiny_folder, "--out", tmp_path)
    assert refused.returncode == 2 and "is a run folder" in refused.stderr  # it would mix with the run's files
    result = cli("evaluate", tmp_path / "model.npz", "--data", tiny_folder, "--out", tmp_path / "evaluation")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    head, _ = load_model_file(tmp_path / "model.npz")
    codes = extract_codes(load_dataset(tiny_folder, seed=3, test_percent=30), "efficientnet_lite0", progress=False)
    x, y = codes.part("test")
    assert metrics["images"] == len(y) and sum(r["images"] for r in metrics["per_class"].values()) == len(y)
    assert metrics["accuracy"] == pytest.approx(float((head.predict(x) == y).mean()))
    assert np.array(metrics["confusion"]).trace() == round(metrics["accuracy"] * len(y))
    assert f"{metrics['accuracy'] * 100:.2f}%" in result.stdout
    other = tmp_path / "other"  # the same classes, but other images: its test split is not the model's
    shutil.copytree(tiny_folder, other)
    (other / "bars" / "000.png").unlink()
    (other / "discs" / "000.png").rename(other / "discs" / "moved.png")
    refused = cli("evaluate", tmp_path / "model.npz", "--data", other, "--out", tmp_path / "evaluation2")
    assert refused.returncode == 2 and "not the one this model was trained beside" in refused.stderr


@pytest.mark.parametrize("args,message", [
    (["run", "--data", "/no/such/folder"], "does not exist"),
    (["run", "--data", "{tiny}", "--backbone", "resnet9000"], "known: inception_v3_2015"),
    (["run", "--data", "{tiny}", "--batch-size", "0"], "must be at least 1"),
    (["run", "--data", "{tiny}", "--test-percent", "150"], "must be in [0, 100)"),
    (["predict", "/no/model.npz", "x.jpg"], "does not exist"),
    (["report", "/no/run"], "does not exist"),
    (["audit", "/no/run"], "run folder /no/run does not exist"),
    (["audit", "{empty}"], "not a finished run folder (it has no settings.json)"),
    (["predict", "{empty}", "x.jpg"], "a folder without model.npz, not a run folder: the model comes first"),
    (["serve", "{empty}"], "a folder without model.npz, not a run folder: give the folder `cnncodes run --out` wrote"),
    (["serve", "/no/run"], "model '/no/run' does not exist (a run folder, its model.npz, or a model.onnx)"),
    (["run", "--data", "{empty}"], "no images found"),
    (["run", "--data", "{single}"], "only one class"),
])
def test_errors_are_one_line_without_traceback(tiny_folder, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "single" / "cats").mkdir(parents=True)
    (tmp_path / "single" / "cats" / "a.png").write_bytes((tiny_folder / "discs" / "000.png").read_bytes())
    args = [a.format(tiny=tiny_folder, empty=tmp_path / "empty", single=tmp_path / "single") for a in args]
    result = cli(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3  # argparse adds a usage line


def test_backbones_lists_the_registry(capsys):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "inception_v3_2015" in out and "299px" in out and "(default)" in out


def test_presets_resolve_and_explicit_flags_win():
    from cnncodes import CnnCodesError
    from cnncodes.presets import resolve

    assert resolve(None) == {"backbone": "efficientnet_lite0", "head": "auto", "flip": False}  # presets.choose_head
    assert resolve("fast") == {"backbone": "efficientnet_lite0", "head": "tuned", "flip": False}
    assert resolve("best") == {"backbone": "efficientnet_lite0:layers=multi+efficientnet_lite1+efficientnet_lite2"
                                           "+inception_v3_2015", "head": "tuned", "flip": False}
    assert resolve("original", head="tuned") == {"backbone": "inception_v3_2015", "head": "tuned", "flip": False}
    with pytest.raises(CnnCodesError, match="known: fast"):
        resolve("turbo")


def test_ctrl_c_stops_cleanly_with_a_resume_hint(tmp_path, monkeypatch):
    """Interrupted mid-extraction: exit code 130 and a resume hint. The folder is large enough (1,200 images, one per
    batch) that extraction cannot finish between the store appearing and the signal, even on a fast machine."""
    monkeypatch.setenv("CNNCODES_RUNTIME", "torch")  # batches of 1 image, a fresh cache
    import signal
    import time

    from .conftest import write_image_folder

    folder = write_image_folder(tmp_path / "many", 400, seed=3)
    env = dict(os.environ, CNNCODES_NO_REEXEC="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnncodes", "--quiet", "extract", "--data", str(folder), "--batch-size", "1",
         "--cache-dir", str(tmp_path), "--out", str(tmp_path / "out")],
        stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a shell's background job ignores SIGINT
    deadline = time.time() + 120
    while not list(tmp_path.glob("stores/*/identity.json")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "run the same command again to resume" in err and "Traceback" not in err


def test_fast_malloc_reexec_keeps_the_callers_settings():
    from cnncodes.codes.runtime import fast_malloc_env

    env = fast_malloc_env({"GLIBC_TUNABLES": "glibc.pthread.rseq=0", "LD_PRELOAD": "/x/libmine.so"}, None)
    assert env["GLIBC_TUNABLES"].startswith("glibc.pthread.rseq=0:") and "trim_threshold" in env["GLIBC_TUNABLES"]
    env = fast_malloc_env({"LD_PRELOAD": "/x/libmine.so"}, "/usr/lib/libtcmalloc_minimal.so.4")
    assert env["LD_PRELOAD"] == "/usr/lib/libtcmalloc_minimal.so.4 /x/libmine.so"


def test_reexec_does_not_import_modules_from_the_current_folder(tmp_path):
    """The CLI re-executes itself for its allocator; a numpy.py in the folder it runs from must not be imported."""
    import shutil

    (tmp_path / "numpy.py").write_text("raise SystemExit('imported the numpy.py of the current folder')\n")
    script = shutil.which("cnncodes", path=os.path.dirname(sys.executable)) or shutil.which("cnncodes")
    env = {k: v for k, v in os.environ.items() if k not in ("CNNCODES_NO_REEXEC", "CNNCODES_MALLOC")}
    result = subprocess.run([script, "predict", "/no/model.npz", "x.jpg"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert "imported the numpy.py" not in result.stderr + result.stdout
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_flipped_codes_are_aligned_with_the_codes_by_image_id(monkeypatch):
    """An image usable in one view only is left out of both, and the rows of both views are the same images."""
    import numpy as np

    from cnncodes import pipeline
    from cnncodes.codes.view import Codes
    from cnncodes.settings import RunSettings

    ids = np.array(["a.png", "b.png", "c.png", "d.png"])
    plain = Codes(np.arange(4, dtype=np.float32)[:, None], np.array([0, 1, 0, 1]), ids, np.array(["train"] * 4),
                  ["x", "y"], "efficientnet_lite0")
    mirrored = plain.select(np.array([True, False, True, True]))  # b.png failed in the mirrored view
    mirrored = Codes(mirrored.vectors[::-1] + 10, mirrored.labels[::-1], mirrored.ids[::-1], mirrored.splits[::-1],
                     ["x", "y"], "efficientnet_lite0")  # and its rows come in another order
    monkeypatch.setattr(pipeline, "extract_codes", lambda ds, name, flip=False, **kw: mirrored if flip else plain)
    codes, flipped = pipeline.codes_of(None, RunSettings(flip=True), progress=False)
    assert list(codes.ids) == list(flipped.ids) == ["a.png", "c.png", "d.png"]
    assert np.array_equal(flipped.vectors - 10, codes.vectors)


@pytest.mark.slow  # int8 graphs: precision-independent, once, not again in the fp32 pass
def test_a_run_works_from_another_folder_and_its_model_without_the_training_images(tiny_folder, tmp_path):
    """`run --data photos` from one folder; audit, similar, evaluate and export from another; then the images move
    away: predict still works (the int8 graph travels in the run folder), and --data points the rest at them."""
    import shutil

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    shutil.copytree(tiny_folder, work / "photos")
    run = cli("run", "--data", "photos", "--runtime", "onnx-int8", "--out", "out", "--no-report", cwd=work)
    assert run.returncode == 0, run.stderr
    out = work / "out"
    assert json.loads((out / "settings.json").read_text())["data"] == str(work / "photos")
    query = work / "photos" / "bars" / "000.png"
    for args in (["audit", out, "--out", elsewhere / "audit"], ["similar", out, query, "--out", elsewhere / "s.html"],
                 ["evaluate", out / "model.npz"]):
        result = cli(*args, cwd=elsewhere)
        assert result.returncode == 0, (args, result.stderr)
    moved = tmp_path / "moved"
    shutil.move(work / "photos", moved)
    shutil.copy(moved / "bars" / "000.png", elsewhere / "query.png")
    predicted = cli("predict", out / "model.npz", elsewhere / "query.png", cwd=elsewhere)
    assert predicted.returncode == 0 and "bars" in predicted.stdout.split(":")[1], predicted.stderr
    missing = cli("evaluate", out / "model.npz", cwd=elsewhere)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    again = cli("evaluate", out / "model.npz", "--data", moved, cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    exported = cli("export", out, "--int8", "--out", elsewhere / "m.onnx", cwd=elsewhere)
    assert exported.returncode == 0 and "note:" not in exported.stdout, exported.stderr + exported.stdout
    floated = cli("export", out, "--out", elsewhere / "f.onnx", cwd=elsewhere)  # the float network of an int8 run
    assert floated.returncode == 0 and "--int8 exports the network the run used" in floated.stdout, floated.stderr


def test_debug_shows_the_traceback_of_the_packages_own_errors(tmp_path):
    plain = cli("extract", "--data", tmp_path / "nope", "--out", tmp_path / "o")
    debug = cli("--debug", "extract", "--data", tmp_path / "nope", "--out", tmp_path / "o")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and "does not exist" in plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "does not exist" in debug.stderr


def test_similar_with_no_readable_query_fails_and_predictions_have_no_empty_columns(finished_run, tmp_path):
    out, _ = finished_run
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    similar = cli("similar", out, tmp_path / "broken.jpg", "--out", tmp_path / "s.html")
    assert similar.returncode == 2 and "no query image could be read" in similar.stderr
    from PIL import Image

    good = tmp_path / "good.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(good)
    predicted = cli("predict", out / "model.npz", good, "--top-k", "5", "--out", tmp_path / "p.csv")
    assert predicted.returncode == 0, predicted.stderr
    header = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    assert header == ["path", "label", "unknown_score", "class_1", "probability_1", "class_2", "probability_2", "class_3", "probability_3",
                      "error"]  # three classes: no empty columns for a 4th and 5th


@pytest.mark.slow  # a run with its report, an audit and a similar page
def test_html_in_class_and_file_names_stays_text_in_every_page(tmp_path):
    import re
    import shutil

    from .conftest import write_image_folder

    data = write_image_folder(tmp_path / "data", 20, seed=4)
    evil_class, evil_file = "<b onclick=x>bold", "<img src=x onerror=alert(1)>.png"  # no "/": a file name
    (data / "discs").rename(data / evil_class)
    shutil.move(data / "bars" / "000.png", data / "bars" / evil_file)
    out = tmp_path / "run"
    assert cli("run", "--data", data, "--out", out, "--test-percent", "40").returncode == 0
    assert cli("audit", out).returncode == 0
    assert cli("similar", out, data / "bars" / evil_file, "--out", tmp_path / "similar.html").returncode == 0
    for page in (out / "report.html", out / "audit" / "audit.html", tmp_path / "similar.html"):
        text = re.sub(r"<script.*?</script>", "", page.read_text(), flags=re.S)  # the map's data is JSON, not markup
        assert "<b onclick" not in text and "<img src=x" not in text, page
    assert "&lt;b onclick=x&gt;bold" in (out / "report.html").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in (tmp_path / "similar.html").read_text()


@pytest.mark.slow  # command behaviour: once, not again in the fp32 pass
def test_evaluate_without_test_images_and_audit_at_threshold_zero(finished_run, tiny_folder, tmp_path):
    trained = cli("train", "--data", tiny_folder, "--test-percent", "0", "--out", tmp_path / "t")
    assert trained.returncode == 0, trained.stderr
    untested = cli("run", "--data", tiny_folder, "--test-percent", "0", "--out", tmp_path / "r")  # names the way out
    assert untested.returncode == 2 and "`cnncodes train`" in untested.stderr, untested.stderr
    evaluated = cli("evaluate", tmp_path / "t" / "model.npz")
    assert evaluated.returncode == 2 and "no test images" in evaluated.stderr
    out, _ = finished_run
    pairs = {}
    for threshold in ("0.85", "0"):
        audited = cli("audit", out, "--threshold", threshold, "--out", tmp_path / threshold)
        assert audited.returncode == 0, audited.stderr
        pairs[threshold] = int(audited.stdout.split(" likely label errors, ")[1].split()[0].replace(",", ""))
    assert pairs["0"] > pairs["0.85"]  # 0 is a threshold, not "the default"


def test_newcomers_mistakes_get_messages_that_name_them(finished_run, tiny_folder, tmp_path):
    out, _ = finished_run
    image = tiny_folder / "discs" / "000.png"
    by_folder = cli("predict", out, image)
    assert by_folder.returncode == 0 and "discs" in by_folder.stdout, by_folder.stderr  # a run folder is a model
    typo = cli("predict", out, image, tmp_path / "new_photo")
    assert typo.returncode == 2 and "no such file or folder" in typo.stderr and "new_photo" in typo.stderr
    unwritten = cli("predict", out, image, "--format", "json")  # a format without a file would be ignored
    assert unwritten.returncode == 2 and "--out predictions.json" in unwritten.stderr, unwritten.stderr
    mistyped = cli("evaluate", out, "--data", tmp_path / "photo")
    assert mistyped.returncode == 2 and f"--data {tmp_path / 'photo'} does not exist" in mistyped.stderr
    holder = tmp_path / "holder"
    (holder / "img").mkdir(parents=True)
    (holder / "img" / "a.png").write_bytes(image.read_bytes())
    (holder / "labels.csv").write_text("path,label\nimg/a.png,x\n")
    folder_for_csv = cli("extract", "--data", holder, "--out", tmp_path / "o")
    assert folder_for_csv.returncode == 2 and f"--data {holder / 'labels.csv'}" in folder_for_csv.stderr
    positional = cli("run", tiny_folder, "--out", tmp_path / "r")  # the collection given without --data
    assert positional.returncode == 2 and f"unrecognized arguments: {tiny_folder}" in positional.stderr \
        and "cnncodes run takes its images as --data PATH" in positional.stderr
    for extra in (["--data", tiny_folder, "--ouput", tmp_path], ["--data", "x", "a" * 300]):  # a typo; not a path
        refused = cli("run", *extra)
        assert refused.returncode == 2 and "unrecognized arguments" in refused.stderr \
            and "--data PATH" not in refused.stderr and "Traceback" not in refused.stderr
    port = cli("serve", out, "--port", "99999")
    assert port.returncode == 2 and "at most 65535" in port.stderr and "Traceback" not in port.stderr
    import shutil

    shutil.copytree(tiny_folder, tmp_path / "few")  # the only bars image labelled is filed as test
    rows = [f"discs/{i:03d}.png,discs,{'test' if i < 4 else 'train'}" for i in range(12)] + ["bars/000.png,bars,test"]
    (tmp_path / "few" / "labels.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    lonely = cli("run", "--data", tmp_path / "few" / "labels.csv", "--out", tmp_path / "lonely")
    assert lonely.returncode == 2 and "the train split holds images of one class only" in lonely.stderr
    assert "test              5  (bars 1, discs 4)" in lonely.stderr and "Traceback" not in lonely.stderr

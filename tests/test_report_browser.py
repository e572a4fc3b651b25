"""report.html opens from disk in headless Chromium without errors and shows every picture."""
import re
import subprocess

import numpy as np
import pytest

from .browser import chromium
from .test_cli import finished_run  # noqa: F401 - the shared finished run fixture

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]


@pytest.mark.slow
def render(out, tmp_path):
    """Open report.html in headless Chromium: (the page's DOM after load, stderr)."""
    browser = chromium()
    page = (out / "report.html").resolve().as_uri()
    result = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_report_renders_all_pictures_in_chromium(finished_run, tmp_path):  # noqa: F811
    out, _ = finished_run
    result = render(out, tmp_path)
    total = re.search(r'data-images-total="(\d+)"', result.stdout)
    shown = re.search(r'data-images-shown="(\d+)"', result.stdout)
    assert total and shown, "the page's load handler did not run"
    assert int(total.group(1)) >= 7 and shown.group(1) == total.group(1)
    # the interactive map: every test point drawn with its image, and a hover showing image, label and prediction
    test_images = len(np.load(out / "test_predictions.npz")["ids"])
    assert re.search(r'data-map-points="(\d+)"', result.stdout).group(1) == str(test_images)
    assert 'data-map-hover="@img,@label,@pred"' in result.stdout
    console_errors = [line for line in result.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not console_errors
    shot = tmp_path / "shot.png"
    page = (out / "report.html").resolve().as_uri()
    subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}",
                    "--window-size=1200,2000", page], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000


@pytest.mark.slow
def test_report_stays_readable_with_120_classes(tmp_path):
    """Many classes: balanced accuracy, macro-F1 and top-5 in metrics.json and on the page; the confusion matrix
    shows the most confused classes, the sample grid and the bars are capped; every picture renders."""
    import colorsys
    import json
    import struct

    import numpy as np
    from PIL import Image

    from .conftest import cli

    rng = np.random.default_rng(0)
    for k in range(120):
        folder = tmp_path / "data" / f"class_{k:03d}"
        folder.mkdir(parents=True)
        colour = np.array(colorsys.hsv_to_rgb(k / 120, 0.4 + 0.6 * (k % 3) / 2, 0.5 + 0.5 * (k % 2))) * 255
        for i in range(6):
            img = np.clip(colour + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i}.png")
    out = tmp_path / "run"
    result = cli("run", "--data", tmp_path / "data", "--head", "sgd", "--test-percent", "30", "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["class_names"]) == 120
    assert 0 <= metrics["balanced_accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1
    assert metrics["top5_accuracy"] >= metrics["accuracy"]
    page = (out / "report.html").read_text()
    assert "Balanced accuracy" in page and "top-5 accuracy" in page
    samples = json.loads((out / "samples.json").read_text())
    assert len(samples) == 20
    for name in ("confusion.png", "per_class.png", "sample.png"):
        width, height = struct.unpack(">II", (out / name).read_bytes()[16:24])
        assert height < 3000 and width < 3000, (name, width, height)
    dom = render(out, tmp_path).stdout
    total = re.search(r'data-images-total="(\d+)"', dom).group(1)
    assert re.search(r'data-images-shown="(\d+)"', dom).group(1) == total and int(total) >= 7

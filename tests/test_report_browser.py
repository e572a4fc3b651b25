"""report.html opens from disk in headless Chromium without errors and shows every picture."""
import os
import re
import shutil
import subprocess

import pytest

from .test_cli import finished_run  # noqa: F401 - the shared finished run fixture

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but chromium is not installed (scripts/setup.sh installs it)")
        pytest.skip("chromium not installed (Debian package chromium)")
    return path


@pytest.mark.slow
def test_report_renders_all_pictures_in_chromium(finished_run, tmp_path):  # noqa: F811
    out, _ = finished_run
    browser = chromium()
    page = (out / "report.html").resolve().as_uri()
    result = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    total = re.search(r'data-images-total="(\d+)"', result.stdout)
    shown = re.search(r'data-images-shown="(\d+)"', result.stdout)
    assert total and shown, "the page's load handler did not run"
    assert int(total.group(1)) >= 7 and shown.group(1) == total.group(1)
    console_errors = [line for line in result.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not console_errors
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}",
                    "--window-size=1200,2000", page], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000

"""Headless Chromium driven over the DevTools protocol (a websocket), for the pages that take input: press keys,
choose files, read the page. No browser-automation package is needed beyond websockets."""
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import time

import pytest

KEYS = {"Enter": ("Enter", 13, "\r"), "Backspace": ("Backspace", 8, ""), " ": ("Space", 32, " ")}


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but chromium is not installed (scripts/setup.sh installs it)")
        pytest.skip("chromium not installed (Debian package chromium)")
    return path


class Browser:
    def __init__(self, profile):
        from websockets.sync.client import connect

        import httpx

        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={profile}", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline, port = time.time() + 60, None
        while port is None and time.time() < deadline:
            line = self.proc.stderr.readline()
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = found and found.group(1)
        assert port, "chromium did not open its DevTools port"
        page = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page")
        self.stack = contextlib.ExitStack()
        self.socket = self.stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None))
        self.ids = itertools.count(1)

    def send(self, method: str, **params) -> dict:
        n = next(self.ids)
        self.socket.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=120))
            if message.get("id") == n:
                assert "error" not in message, message["error"]
                return message["result"]

    def open(self, url: str) -> None:
        self.send("Page.enable")
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 60):
        deadline = time.time() + seconds
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"the page never had {expression}")

    def press(self, key: str, shift: bool = False) -> None:
        if key in KEYS:
            code, number, text = KEYS[key]
        else:
            code, number, text = (f"Digit{key}" if key.isdigit() else f"Key{key.upper()}"), ord(key.upper()), key
        common = {"key": key, "code": code, "windowsVirtualKeyCode": number, "modifiers": 8 if shift else 0}
        self.send("Input.dispatchKeyEvent", type="keyDown", text=text, **common)
        self.send("Input.dispatchKeyEvent", type="keyUp", **common)

    def choose_files(self, selector: str, paths) -> None:
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def close(self) -> None:
        self.stack.close()
        self.proc.kill()
        self.proc.wait()

"""A small Chrome DevTools Protocol client over `--remote-debugging-pipe`: no port, no websocket library.

Chromium reads commands from fd 3 and writes replies and events to fd 4, each a JSON message ended by a NUL
byte. The client starts headless Chromium (Debian's package) with a fresh profile and the flags that keep it
from talking to anything on its own, opens one page target, and records every event of that page: console
calls, exceptions, log entries (CSP violations, failed loads) and network requests.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class CdpError(Exception):
    pass


class Browser:
    """Headless Chromium driven over the DevTools pipe. Use as a context manager."""

    def __init__(self, executable: str, *, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self._profile = tempfile.mkdtemp(prefix="kas-chromium-")
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # copies above fd 10, so that placing them on 3 and 4 in the child cannot overwrite one with the other
        child_in = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r)
        os.close(from_child_w)

        def place_pipe() -> None:  # in the child, before exec: dup2 makes 3 and 4 inheritable
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=place_pipe,
        )
        os.close(child_in)
        os.close(child_out)
        self._write_fd = to_child_w
        self._read_fd = from_child_r
        self._next_id = 0
        self._lock = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._reader.start()
        self.session = ""

    # -- protocol ----------------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._read_fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._closed = True
                    self._lock.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                with self._lock:
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._lock.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None) -> dict[str, Any]:
        """Send one command (to the page session unless `session` is "") and wait for its result."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        target_session = self.session if session is None else session
        if target_session:
            message["sessionId"] = target_session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._write_fd, data) :]
        deadline = time.monotonic() + self.timeout_s
        with self._lock:
            while ident not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CdpError(f"no answer to {method} ({'browser gone' if self._closed else 'timeout'})")
                self._lock.wait(left)
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The first recorded event matching `predicate`, waiting for it up to the timeout."""
        deadline = time.monotonic() + self.timeout_s
        with self._lock:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CdpError(f"no {what} event")
                self._lock.wait(left)

    # -- a page ------------------------------------------------------------------------------------------------
    def open_page(self, width: int, height: int) -> None:
        """A new page target, attached, with the domains whose events the tests read enabled."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session="")["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session="")["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def load(self, url: str) -> None:
        """Navigate and wait for the load event of this navigation."""
        before = len(self.page_events("Page.loadEventFired"))
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"navigation failed: {result['errorText']}")
        deadline = time.monotonic() + self.timeout_s
        while len(self.page_events("Page.loadEventFired")) <= before:
            if time.monotonic() > deadline:
                raise CdpError("page did not load")
            with self._lock:
                self._lock.wait(0.1)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CdpError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot_png(self, *, full_page: bool = False) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        return base64.b64decode(self.send("Page.captureScreenshot", params)["data"])

    def page_events(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("method") == method and e.get("sessionId") == self.session]

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, error log entries (CSP violations, failed loads)."""
        found = []
        for event in self.page_events("Runtime.consoleAPICalled"):
            params = event["params"]
            if params.get("type") in ("error", "warning", "assert"):
                found.append(f"console.{params['type']}: {[a.get('value', a.get('description')) for a in params.get('args', [])]}")
        for event in self.page_events("Runtime.exceptionThrown"):
            found.append(f"exception: {event['params']['exceptionDetails'].get('text')}")
        for event in self.page_events("Log.entryAdded"):
            entry = event["params"]["entry"]
            if entry.get("level") in ("error", "warning"):
                found.append(f"log {entry.get('source')}: {entry.get('text')}")
        return found

    def requests(self) -> list[str]:
        """URLs of every network request the page made (the document's own navigation included)."""
        return [e["params"]["request"]["url"] for e in self.page_events("Network.requestWillBeSent")]

    # -- lifetime ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        try:
            if self.process.poll() is None and not self._closed:
                self.send("Browser.close", session="")
        except CdpError:
            pass
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        for fd in (self._write_fd, self._read_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._reader.join(timeout=5)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_url(path: Path) -> str:
    return path.resolve().as_uri()

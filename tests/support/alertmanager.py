"""A real Alertmanager for tests: the Debian package's `prometheus-alertmanager` (or `alertmanager` on PATH).

`Alertmanager(tmp_dir)` writes a minimal config (one receiver: "null", which notifies nobody; or, with
`webhook_url`, a webhook receiver that gets every group at once), starts the binary on 127.0.0.1 (a free port,
its own storage directory, clustering off: `--cluster.listen-address=`), waits until `/-/ready` answers 200,
and `stop()` ends it (SIGTERM, then SIGKILL after 10 s). `alerts()` reads `GET /api/v2/alerts` back.

`binary()` finds the executable; `require_binary()` is for tests: where it is missing, a test FAILS under
CI=true (CI installs the package: .ci/apt-packages) and is SKIPPED elsewhere, saying why.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.wait import until_blocking

NAMES = ("prometheus-alertmanager", "alertmanager")
DEBIAN_PATH = "/usr/bin/prometheus-alertmanager"


def binary() -> str | None:
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return DEBIAN_PATH if os.access(DEBIAN_PATH, os.X_OK) else None


def require_binary() -> str:
    found = binary()
    if found is not None:
        return found
    why = "Alertmanager is not installed (Debian package prometheus-alertmanager: apt-get install prometheus-alertmanager)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI must install it (.ci/apt-packages)")
    pytest.skip(why)


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def config_yaml(webhook_url: str | None) -> str:
    if webhook_url is None:
        return 'route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n'
    return (
        "route:\n"
        '  receiver: "hook"\n'
        "  group_by: [alertname]\n"
        "  group_wait: 0s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        '  - name: "hook"\n'
        "    webhook_configs:\n"
        f"      - url: {json.dumps(webhook_url)}\n"
        "        send_resolved: false\n"
    )


class Alertmanager:
    def __init__(self, tmp_dir: Path, *, webhook_url: str | None = None) -> None:
        self.exe = require_binary()
        self.dir = tmp_dir
        self.webhook_url = webhook_url
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tmp_dir / "alertmanager.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Alertmanager:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "alertmanager.yml"
        config.write_text(config_yaml(self.webhook_url))
        self.port = free_port()
        args = [
            self.exe,
            f"--config.file={config}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        until_blocking(self._ready, timeout_s=60, what=lambda: f"Alertmanager ready on {self.url}; its log: {self.log()[-2000:]}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"Alertmanager exited with {self.proc.returncode}: {self.log()[-2000:]}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts (active, silenced, inhibited and unprocessed alike)."""
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        with urllib.request.urlopen(self.url + "/api/v2/alerts" + (f"?{query}" if query else ""), timeout=10) as r:
            result: list[dict[str, Any]] = json.loads(r.read())
            return result

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> Alertmanager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

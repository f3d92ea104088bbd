"""The real agent process as systemd runs it: sd_notify over NOTIFY_SOCKET (READY, STATUS, WATCHDOG,
RELOADING on SIGHUP, STOPPING on SIGTERM), JSON logs on stderr with no secret in them, and the
/metrics the shipped alerts and dashboard query."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import yaml

from tests.ops.monitoring import SYNTHETIC, all_used_metric_names, exposed_sample_names
from tests.support.corpus import REPO, numbered_lines
from tests.support.harness import append
from tests.support.wait import until_blocking

HASH_KEY = "hk-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


class Manager:
    """systemd's side of NOTIFY_SOCKET, in the abstract namespace as systemd itself uses."""

    def __init__(self) -> None:
        self.name = f"@kas-e2e-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name[1:].encode())
        self.seen: list[dict[str, str]] = []

    def wait_for(self, key: str, timeout: float = 30.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                break
            msg = dict(line.split("=", 1) for line in data.split("\n"))
            self.seen.append(msg)
            if key in msg:
                return msg
        raise AssertionError(f"no {key} within {timeout}s; got {self.seen}")


def _metrics_address(stderr: Path) -> str:
    def logged() -> str | None:
        for line in stderr.read_text().splitlines():
            doc = json.loads(line)
            if doc.get("msg") == "serving metrics":
                return str(doc["address"])
        return None

    return until_blocking(logged, what=lambda: f"a 'serving metrics' log line:\n{stderr.read_text()}")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_agent_under_a_fake_systemd(tmp_path: Path) -> None:
    log = tmp_path / "audit" / "audit.log"
    append(log, numbered_lines(200))
    key_file = tmp_path / "redact.key"
    key_file.write_text(HASH_KEY + "\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "state"),
                "input": {"paths": [str(log)]},
                "enrich": {"redact": {"mode": "hash", "hash_key": f"${{file:{key_file}}}"}},
                "sinks": [{"name": "archive", "type": "file", "path": str(tmp_path / "out")}],
                "checkpoint": {"flush_interval_ms": 200},
                "metrics": {"listen": "127.0.0.1:0"},
            }
        )
    )
    manager = Manager()
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_PID", "JOURNAL_STREAM")}
    env |= {"NOTIFY_SOCKET": manager.name, "WATCHDOG_USEC": "2000000"}
    stderr = tmp_path / "stderr.log"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kube_audit_shipper", "--log-format", "json", "run", "-c", str(cfg)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        manager.wait_for("READY")
        assert proc.poll() is None
        manager.wait_for("WATCHDOG", timeout=5)  # armed by WATCHDOG_USEC, sent from the main loop
        status = next((m for m in manager.seen if "STATUS" in m), None) or manager.wait_for("STATUS", timeout=10)
        assert status["STATUS"].strip() and "\n" not in status["STATUS"]

        address = _metrics_address(stderr)
        assert _get(f"http://{address}/healthz")[0] == 200
        until_blocking(lambda: _get(f"http://{address}/readyz")[0] == 200, what="/readyz 200")
        assert _get(f"http://{address}/readyz")[0] == 200
        code, exposition = _get(f"http://{address}/metrics")
        assert code == 200
        exported = exposed_sample_names(exposition)
        missing = {name: where for name, where in all_used_metric_names().items() if name not in exported and name not in SYNTHETIC}
        assert not missing, f"alerts/dashboard query metrics the agent does not export: {missing}"

        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        proc.send_signal(signal.SIGHUP)
        reloading = manager.wait_for("RELOADING", timeout=10)
        assert reloading["RELOADING"] == "1"
        assert before <= int(reloading["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        manager.wait_for("READY", timeout=30)  # the reload finished

        proc.send_signal(signal.SIGTERM)
        assert manager.wait_for("STOPPING", timeout=10)["STOPPING"] == "1"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        manager.sock.close()

    text = stderr.read_text()
    lines = text.splitlines()
    assert lines, "the agent logged nothing"
    for line in lines:
        json.loads(line)  # structured: one JSON object per line, even with NOTIFY_SOCKET set
    assert HASH_KEY not in text

"""Detection end to end, from `run`: events in, alerts at a real Alertmanager, at the strict DingTalk server and in
a file target; `detect` over the same logs raises the same alerts; windows survive a restart (no alert lost, none
repeated); alerts not yet delivered when the agent is killed are delivered after it restarts.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
import zstandard

from tests.support.alertmanager import Alertmanager
from tests.support.corpus import REAL_AUDIT, REPO
from tests.support.dingtalk_server import DingTalkServer, message_text
from tests.support.harness import append
from tests.support.wait import until_blocking
from tests.support.webhook_server import WebhookReceiver
from tests.unit.process.detect.audit_events import line

PUBLIC_IP = "45.33.32.156"  # a public address (documentation ranges count as reserved, not public)


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kube_audit_shipper", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _config(tmp_path: Path, alerts: list[dict[str, Any]], **top: Any) -> Path:
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "input": {"paths": [str(tmp_path / "log" / "audit.log")], "poll_interval_ms": 50, "rescan_interval_ms": 200},
        "batch": {"max_wait_ms": 50},
        "sinks": [{"name": "archive", "type": "file", "path": str(tmp_path / "out")}],
        "alerts": [{"name": "alert-file", "type": "file", "path": str(tmp_path / "alerts"), "batch": {"max_wait_ms": 50}}, *alerts],
        "checkpoint": {"flush_interval_ms": 50},
        "metrics": {"listen": None},
        **top,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def stored_alerts(directory: Path) -> list[dict[str, Any]]:
    """The Alert records the file alert target wrote (finished files and the one being written)."""
    out: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*alerts-*.ndjson.zst*")) if directory.exists() else []:
        reader = zstandard.ZstdDecompressor().stream_reader(path.read_bytes(), read_across_frames=True)
        try:
            data = reader.read()
        except zstandard.ZstdError:
            data = b""  # a frame being written: read again later
        out += [json.loads(x) for x in data.splitlines() if x.strip()]
    return out


def corpus_log(tmp_path: Path) -> Path:
    log = tmp_path / "log" / "audit.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"".join(p.read_bytes() for p in sorted(REAL_AUDIT.glob("*.jsonl"))))
    return log


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "workers"])
def test_run_delivers_alerts_to_alertmanager_dingtalk_and_a_file_and_detect_agrees(tmp_path: Path, workers: int) -> None:
    """With workers, every read is shaped by a worker process while the agent's process detects on it."""
    log = corpus_log(tmp_path)
    with Alertmanager(tmp_path / "alertmanager") as am, DingTalkServer() as ding:
        cfg = _config(
            tmp_path,
            [
                {"name": "am", "type": "alertmanager", "url": am.url, "batch": {"max_wait_ms": 50}},
                {"name": "ding", "type": "dingtalk", "url": ding.url, "access_token": "token-1", "secret": "SEC-test-secret", "batch": {"max_wait_ms": 50}},
            ],
            processing={"workers": workers, "worker_min_bytes": 1},
        )
        run = _cli("--log-level", "warning", "run", "--once", "-c", str(cfg))
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Traceback" not in run.stderr
        delivered = stored_alerts(tmp_path / "alerts")
        assert delivered, "the real events raise alerts (exec, attach, cluster-admin binding, ...)"
        detect = _cli("detect", "--json", "-c", str(cfg), str(log))
        assert detect.returncode == 0, detect.stderr[-3000:]
        expected = [json.loads(x) for x in detect.stdout.splitlines()]
        assert sorted((a["rule"], a["id"]) for a in delivered) == sorted((a["rule"], a["id"]) for a in expected)
        rules = {a["rule"] for a in delivered}
        assert {"exec-into-container", "cluster-admin-binding"} <= rules
        in_am = {a["labels"]["alert_id"]: a for a in am.alerts()}
        assert set(in_am) == {a["id"] for a in delivered}
        assert {a["labels"]["alertname"] for a in in_am.values()} == rules
        texts = "\n".join(message_text(m) for m in ding.messages())
        for rule in rules:
            assert rule in texts
        assert ding.throttle_answers == 0


def _failures(n: int, start: int, second: int) -> list[bytes]:
    """n failed requests from one public IP, one second apart in event time (one window of public-access-failures)."""
    return [
        line(
            "get",
            "secrets",
            namespace="default",
            name=f"s{i}",
            code=403,
            source_ip=PUBLIC_IP,
            user=("system:anonymous", ["system:unauthenticated"]),
            time=f"2026-12-05T10:00:{second + i:02d}.000000Z",
        )
        for i in range(start, start + n)
    ]


def test_a_window_spans_a_restart_and_its_alert_fires_once(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    cfg = _config(tmp_path, [])
    append(log, _failures(6, 0, 0))
    assert _cli("run", "--once", "-c", str(cfg)).returncode == 0
    assert [a for a in stored_alerts(tmp_path / "alerts") if a["rule"] == "public-access-failures"] == []
    append(log, _failures(6, 6, 0))  # 12 failures in the window: the threshold is crossed after the restart
    assert _cli("run", "--once", "-c", str(cfg)).returncode == 0
    assert _cli("run", "--once", "-c", str(cfg)).returncode == 0  # nothing new: nothing raised again
    raised = [a for a in stored_alerts(tmp_path / "alerts") if a["rule"] == "public-access-failures"]
    assert len(raised) == 1, raised
    assert raised[0]["fields"]["ip"] == PUBLIC_IP and raised[0]["count"] >= 10


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_alerts_not_delivered_before_a_kill_are_delivered_after_the_restart(tmp_path: Path) -> None:
    port = _closed_port()
    target = {
        "name": "hook",
        "type": "webhook",
        "url": f"http://127.0.0.1:{port}/alerts",
        "retry": {"initial_ms": 50, "max_ms": 200},
        "batch": {"max_wait_ms": 50},
    }
    cfg = _config(tmp_path, [target])
    exec_line = line(
        "create", "pods", namespace="default", name="web-0", subresource="exec", query="command=sh&command=-c&command=id&container=nginx&stdout=true", code=101
    )
    append(tmp_path / "log" / "audit.log", [exec_line])
    proc = subprocess.Popen([sys.executable, "-m", "kube_audit_shipper", "run", "-c", str(cfg)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "state" / "checkpoints.json"

    def pending() -> bool:
        try:
            return any(f.get("pending_alerts") for f in json.loads(checkpoint.read_bytes())["files"])
        except (OSError, ValueError):
            return False

    try:
        until_blocking(pending, what="the alert saved as not yet delivered")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    alert_id = msgspec.json.decode(json.loads(checkpoint.read_bytes())["files"][0]["pending_alerts"][0])["id"]
    with WebhookReceiver() as receiver:  # the target answers now (the config names it before the restart)
        cfg = _config(tmp_path, [{**target, "url": receiver.url}])
        proc = subprocess.Popen(
            [sys.executable, "-m", "kube_audit_shipper", "run", "-c", str(cfg)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            until_blocking(lambda: any(a["labels"].get("alert_id") == alert_id for a in receiver.alerts()), what="the alert delivered after the restart")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert [a for a in stored_alerts(tmp_path / "alerts") if a["id"] == alert_id], "the file target got it too"
    checkpoint_doc = json.loads(checkpoint.read_bytes())
    assert not any(f.get("pending_alerts") for f in checkpoint_doc["files"])

"""SIGHUP reload of a running agent (a subprocess): in place for policy, restart for the rest, rejected when invalid."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgspec
import pytest
import yaml

from tests.support.corpus import REPO, numbered_lines
from tests.support.harness import append, sink_lines

pytestmark = pytest.mark.integration


def _wait(pred, timeout: float = 30.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sighup_reload_applies_valid_config_and_rejects_invalid(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    out = tmp_path / "out"
    port = _free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n")
    base = {
        "state_dir": str(tmp_path / "state"),
        "input": {"paths": [str(log)], "poll_interval_ms": 50},
        "batch": {"max_events": 50, "max_wait_ms": 50},
        "policy": {"file": str(policy)},
        "enrich": {"enabled": False},
        "sinks": [{"name": "a", "type": "file", "path": str(out)}],
        "checkpoint": {"flush_interval_ms": 100},
        "metrics": {"listen": f"127.0.0.1:{port}"},
    }
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(base))
    append(log, numbered_lines(100))
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(cfg)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        events = lambda: [msgspec.json.decode(x) for x in sink_lines(out, include_tmp=True)]  # noqa: E731
        _wait(lambda: len(events()) >= 100, what="first events")

        # 1. policy file changed: swapped in place; new events come out at the new level
        policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n    verbs: [get]\n  - level: Metadata\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        more = numbered_lines(100, start=100)
        append(log, more)
        gets = sum(1 for x in more if msgspec.json.decode(x).get("verb") == "get")
        _wait(lambda: len(events()) >= 200 - gets, what="events after the policy reload")

        # 2. an invalid config is rejected; the old one keeps running
        cfg.write_text(yaml.safe_dump({**base, "batch": {"max_events": 0}}))
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None
        # 3. a sink change restarts the pipeline from its checkpoint: nothing lost, nothing twice
        cfg.write_text(yaml.safe_dump({**base, "batch": {"max_events": 7, "max_wait_ms": 50}}))
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        last = numbered_lines(50, start=200)
        gets += sum(1 for x in last if msgspec.json.decode(x).get("verb") == "get")  # the new policy drops them too
        append(log, last)
        _wait(lambda: len(events()) >= 250 - gets, what="events after the restart")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'kube_audit_shipper_config_reloads_total{result="applied"} 1.0' in body
        assert 'kube_audit_shipper_config_reloads_total{result="failed"} 1.0' in body
        assert 'kube_audit_shipper_config_reloads_total{result="restarted"} 1.0' in body
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "batch.max_events: expected int >= 1" in err.decode()
    ids = [e["auditID"] for e in (msgspec.json.decode(x) for x in sink_lines(out))]
    assert len(ids) == len(set(ids)) == 250 - gets  # nothing twice, nothing lost

"""Alerts stored as JSON records by the event sinks (file, loki, sls) through the delivery engine: the native Alert
record byte for byte, or Falco's JSON for falcosidekick; a record that is no alert dead-lettered with its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.sinks import alert_registry
from kube_audit_shipper.sinks.alert_registry import AlertTargetConfig, build_alert_target
from tests.integration.alerts.engine import dead_letters, ship
from tests.support.harness import sink_lines
from tests.support.loki_server import LokiServer
from tests.support.sink_context import context
from tests.support.sls_server import SlsTestServer
from tests.unit.sinks.alerts.alerts import mixed, records

FALCO_KEYS = {"time", "rule", "priority", "source", "hostname", "output", "output_fields", "tags"}


def target(tmp_path: Path, spec: dict[str, Any]) -> Any:
    cfg = msgspec.convert(spec, AlertTargetConfig)
    return build_alert_target(cfg, context(tmp_path / "state"))


def with_junk(alerts_records: list[bytes]) -> list[bytes]:
    return [*alerts_records[:3], b'{"apiVersion": "audit.k8s.io/v1", "kind": "Event"}', *alerts_records[3:]]


@pytest.mark.parametrize("fmt", ["alert", "falco"])
def test_file_target(tmp_path: Path, dl: DeadLetterStore, fmt: str) -> None:
    alerts = mixed(50)
    sink = target(tmp_path, {"type": "file", "name": "alert-files", "path": str(tmp_path / "out"), "format": fmt})
    ship(sink, with_junk(records(alerts)), dl, max_events=20)
    assert list(dead_letters(dl).values()) == ["sink alert-files: invalid_alert: not an alert record: Object missing required field `rule`"]
    lines = sink_lines(tmp_path / "out")
    assert all(p.name.startswith("alerts-") for p in (tmp_path / "out").iterdir())
    if fmt == "alert":
        assert lines == records(alerts)
        return
    stored = [msgspec.json.decode(line) for line in lines]
    assert all(set(s) == FALCO_KEYS and s["source"] == "k8s_audit" for s in stored)
    assert [s["output_fields"]["kas.alert_id"] for s in stored] == [a.id for a in alerts]
    assert {s["priority"] for s in stored} <= {"Critical", "Error", "Warning", "Notice", "Informational"}


def test_loki_target_streams_alerts_under_their_own_labels(tmp_path: Path, dl: DeadLetterStore, loki_server: LokiServer) -> None:
    alerts = mixed(30)
    sink = target(tmp_path, {"type": "loki", "name": "alert-loki", "url": loki_server.url, "labels": {"job": "kube-audit-alerts", "cluster": "prod"}})
    ship(sink, with_junk(records(alerts)), dl)
    assert len(dead_letters(dl)) == 1
    stored = loki_server.stored()
    assert list(stored) == ['{cluster="prod", job="kube-audit-alerts", node="cp-1", service_name="kube-audit-alerts"}']
    assert sorted(loki_server.lines()) == sorted(r.decode() for r in records(alerts))


def test_sls_target_stores_falco_records(tmp_path: Path, dl: DeadLetterStore, sls_server: SlsTestServer) -> None:
    alerts = mixed(20)
    spec = {
        "type": "sls",
        "name": "alert-sls",
        "endpoint": sls_server.url,
        "project": "k8s-log-c0123",
        "logstore": "audit-c0123",
        "access_key_id": "AKID",
        "access_key_secret": "SECRET",
        "format": "falco",
    }
    ship(target(tmp_path, spec), with_junk(records(alerts)), dl)
    assert len(dead_letters(dl)) == 1
    rows = sls_server.logs("audit-c0123")
    assert sorted(r["rule"] for r in rows) == sorted(a.rule for a in alerts)
    assert all(r["source"] == "k8s_audit" and r["hostname"] for r in rows)
    assert {msgspec.json.decode(r["output_fields"])["kas.alert_id"] for r in rows} == {a.id for a in alerts}
    assert alert_registry.target_type(msgspec.convert(spec, AlertTargetConfig)) == "sls"

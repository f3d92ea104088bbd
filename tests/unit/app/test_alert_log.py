"""Without an alert target, alerts are logged, but not one by one without end: a backlog raising thousands of alerts
must not spend its time formatting log lines (it did: 55 % of the agent's samples in a benchmark)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kube_audit_shipper.app import pipeline
from kube_audit_shipper.app.pipeline import ALERT_LOGS_PER_RULE, Agent
from kube_audit_shipper.config import parse
from kube_audit_shipper.model import Alert, Chunk, alert_encoder


def alerts(rule: str, n: int) -> Chunk:
    records = [
        alert_encoder.encode(Alert(rule=rule, severity="high", time="2026-12-05T10:00:00Z", summary=f"{rule} {i}", audit_ids=[str(i)])) for i in range(n)
    ]
    return Chunk(1, 0, n, records, list(range(1, n + 1)), 0.0)


def test_each_rule_logs_its_first_alerts_a_minute_then_how_many_more(tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = Agent(parse({"state_dir": str(tmp_path), "sinks": [{"name": "a", "type": "file", "path": str(tmp_path / "out")}]}))
    now = [1000.0]
    monkeypatch.setattr(pipeline.time, "monotonic", lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="kube_audit_shipper.app.pipeline"):
        agent._log_alerts(alerts("exec-into-container", 25))
        agent._log_alerts(alerts("secret-read-by-human", 3))
        one_by_one = [r for r in caplog.records if r.getMessage().startswith("alert: ")]
        assert len(one_by_one) == ALERT_LOGS_PER_RULE + 3
        caplog.clear()
        now[0] += 61
        agent._log_alerts(alerts("exec-into-container", 1))
    summary = [r for r in caplog.records if "not logged one by one" in r.getMessage()]
    assert len(summary) == 1 and summary[0].__dict__["alerts"] == 25 - ALERT_LOGS_PER_RULE
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("alert: ")] == ["alert: exec-into-container 0"]


def test_the_alerts_not_logged_one_by_one_are_summarised_at_stop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A backlog that ends within the minute still says how many alerts it did not log one by one."""
    agent = Agent(parse({"state_dir": str(tmp_path), "sinks": [{"name": "a", "type": "file", "path": str(tmp_path / "out")}]}))
    with caplog.at_level(logging.WARNING, logger="kube_audit_shipper.app.pipeline"):
        agent._log_alerts(alerts("exec-into-container", ALERT_LOGS_PER_RULE + 7))
        agent._flush_alert_log()
    summary = [r for r in caplog.records if "not logged one by one" in r.getMessage()]
    assert len(summary) == 1 and summary[0].__dict__["alerts"] == 7

"""sinks/alert_registry.py: the `alerts:` tagged union with every problem at its key path, construction of each
target type, record targets (the event sinks storing alert records), name checks and the secrets to scrub."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kube_audit_shipper.config_convert import convert_all
from kube_audit_shipper.delivery.contract import Delivered, Rejected, Sink
from kube_audit_shipper.obs.logs import Scrubber
from kube_audit_shipper.sinks import alert_registry
from kube_audit_shipper.sinks.alert_registry import AlertTargetConfig, build_alert_target, name_problems, secret_values
from tests.support.harness import sink_lines
from tests.support.sink_context import context
from tests.unit.sinks.alerts.alerts import exec_alert, public_failures_alert, records, secret_alert

SLACK_URL = "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx"
EXAMPLES: dict[str, dict[str, Any]] = {
    "alertmanager": {"url": "http://alertmanager:9093"},
    "dingtalk": {"access_token": "0f3c9a", "secret": "SECabc"},
    "slack": {"webhook_url": SLACK_URL},
    "webhook": {"url": "https://soc.example/hook"},
    "file": {"path": "/tmp/alerts"},
    "sls": {"endpoint": "cn-hangzhou.log.aliyuncs.com", "project": "k8s-log-c0123", "logstore": "alerts-c0123"},
    "loki": {"url": "http://127.0.0.1:3100"},
    "s3": {"bucket": "audit-archive"},
}


def convert(items: list[dict[str, Any]]) -> tuple[list[Any], list[str]]:
    value, errors = convert_all(items, list[AlertTargetConfig], "alerts")  # type: ignore[valid-type]
    return value, errors


def test_every_type_converts_and_builds_into_a_sink(tmp_path: Path) -> None:
    assert set(EXAMPLES) == set(alert_registry.ALERT_TARGET_CONFIGS)
    items = [{"name": f"t-{kind}", "type": kind, **extra} for kind, extra in EXAMPLES.items()]
    items[4]["path"] = str(tmp_path / "alerts")
    configs, errors = convert(items)
    assert errors == []
    for cfg in configs:
        sink = build_alert_target(cfg, context(tmp_path / "state"))
        assert isinstance(sink, Sink) and sink.name == cfg.name
        assert alert_registry.target_type(cfg) == cfg.name[2:]
        asyncio.run(sink.aclose())


def test_problems_are_reported_all_at_once_with_key_paths() -> None:
    _, errors = convert(
        [
            {"name": "am", "type": "alertmanager", "url": "ftp://x", "labels": {"alertname": "x", "0bad": "y"}, "resolve_after_s": 5},
            {"name": "ding", "type": "dingtalk", "rate_messages": 20, "rate_window_s": 30},
            {"name": "slack", "type": "slack", "webhook_url": SLACK_URL, "max_alerts_per_message": 17, "rate_messages": 5, "mention": "@here"},
            {"name": "hook", "type": "webhook", "url": "http://x/y", "bearer_token": "t", "bearer_token_file": "/f", "group_by": ["a-b"]},
            {"name": "loki", "type": "loki", "url": "http://l:3100", "label_fields": ["verb"], "format": "sigma"},
            {"name": "x", "type": "pagerduty"},
            {"type": "file", "path": "/x"},
        ]
    )
    text = "\n".join(errors)
    assert "alerts[0].resolve_after_s: expected int >= 60" in text
    assert "alerts[1].access_token: required key missing" in text
    assert "alerts[2].max_alerts_per_message: expected int >= 1 and <= 16" in text
    assert 'alerts[4].format: expected "alert" or "falco"' in text
    assert 'alerts[5].type: unknown type "pagerduty"; expected one of alertmanager, dingtalk, file, loki, s3, slack, sls, webhook' in text
    assert "alerts[6].name: required key missing" in text
    _, errors = convert(
        [
            {"name": "am", "type": "alertmanager", "url": "ftp://x", "labels": {"alertname": "x", "0bad": "y"}},
            {"name": "ding", "type": "dingtalk", "access_token": "t", "rate_messages": 20, "rate_window_s": 30, "concurrency": 2},
            {"name": "slack", "type": "slack", "webhook_url": SLACK_URL, "rate_messages": 5, "mention": "@here"},
            {"name": "hook", "type": "webhook", "url": "http://x/y", "bearer_token": "t", "bearer_token_file": "/f", "group_by": ["a-b"]},
            {"name": "loki", "type": "loki", "url": "http://l:3100", "label_fields": ["verb"]},
        ]
    )
    by_item = {e.split(":", 1)[0]: e for e in errors}
    assert "url: expected http://host" in by_item["alerts[0]"] and "labels.alertname: set from the alert itself" in by_item["alerts[0]"]
    assert "labels.0bad: not a valid label name" in by_item["alerts[0]"]
    assert "concurrency 2" in by_item["alerts[1]"] and "more than DingTalk's 20 per minute" in by_item["alerts[1]"]
    assert "one message a second" in by_item["alerts[2]"] and "mention: use Slack's syntax" in by_item["alerts[2]"]
    assert "choose one way to authenticate" in by_item["alerts[3]"] and "group_by: 'a-b'" in by_item["alerts[3]"]
    assert "label_fields: must be [] for alerts: verb is an audit-event field" in by_item["alerts[4]"]


def test_record_target_defaults_suit_alerts() -> None:
    (file_cfg, loki_cfg, s3_cfg), errors = convert(
        [{"name": "f", "type": "file", "path": "/x"}, {"name": "l", "type": "loki", "url": "http://l:3100"}, {"name": "s", "type": "s3", "bucket": "abc"}]
    )
    assert errors == []
    assert file_cfg.format == "alert" and file_cfg.file_prefix == "alerts"
    assert loki_cfg.labels == {"job": "kube-audit-alerts"} and loki_cfg.label_fields == [] and loki_cfg.structured_metadata == []
    assert s3_cfg.key_template.startswith("alerts/")


@pytest.mark.parametrize("fmt", ["alert", "falco"])
def test_a_file_target_stores_alert_records_and_rejects_what_is_no_alert(tmp_path: Path, fmt: str) -> None:
    (cfg,), errors = convert([{"name": "f", "type": "file", "path": str(tmp_path / "out"), "format": fmt, "compression": "none"}])
    assert errors == []
    sink = build_alert_target(cfg, context(tmp_path / "state"))
    assert type(sink).__name__ == "AlertFileSink" and sink.max_concurrency == 1
    batch = records([exec_alert(1), public_failures_alert(2), secret_alert(3)])
    batch.insert(2, b'{"not": "an alert"}')

    async def run() -> list[Any]:
        outcomes = []
        for request in sink.encode(batch):
            try:
                result: Any = await sink.send(request)
            except Exception as exc:
                result = exc
            outcomes.append((list(request.indices), sink.classify(request, result)))
        await sink.aclose()
        return outcomes

    outcomes = asyncio.run(run())
    rejected = [o for o in outcomes if isinstance(o[1], Rejected)]
    assert rejected == [([2], Rejected(rejected[0][1].reason, [2]))] and rejected[0][1].reason.startswith("invalid_alert:")
    assert sorted(i for idx, o in outcomes if isinstance(o, Delivered) for i in idx) == [0, 1, 3]
    lines = sink_lines(tmp_path / "out")
    assert len(lines) == 3
    stored = [msgspec.json.decode(line) for line in lines]
    if fmt == "alert":
        assert lines == [batch[0], batch[1], batch[3]]
    else:
        assert [s["rule"] for s in stored] == ["exec-into-container", "public-access-failures", "secret-read-by-human"]
        assert all(s["source"] == "k8s_audit" for s in stored) and stored[1]["priority"] == "Critical"


def test_names_must_be_unique_across_alerts_and_sinks() -> None:
    sinks = [{"name": "archive", "type": "file"}]
    alerts = [{"name": "am"}, {"name": "archive"}, {"name": "am"}, {"name": 3}, "junk"]
    assert name_problems(alerts, sinks) == [
        "alerts[1].name: 'archive' is already the name of sinks[0]",
        "alerts[2].name: duplicate name 'am' (alerts[0] has it)",
    ]
    assert name_problems(None, None) == []


def test_secret_values_cover_what_the_generic_key_walk_would_miss() -> None:
    (ding, slack, hook, am), errors = convert(
        [
            {"name": "d", "type": "dingtalk", "access_token": "tok-0123456789", "secret": "SEC0123456789"},
            {"name": "s", "type": "slack", "webhook_url": SLACK_URL},
            {"name": "w", "type": "webhook", "url": "http://x/y", "bearer_token": "bearer-abcdef", "headers": {"X-Api-Key": "key-123456"}},
            {"name": "a", "type": "alertmanager", "url": "http://am:9093", "basic_auth": {"username": "u", "password": "pa55word"}},
        ]
    )
    assert errors == []
    assert secret_values(ding) == ["tok-0123456789", "SEC0123456789"]
    assert secret_values(slack) == [SLACK_URL, "/services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx"]
    assert secret_values(hook) == ["bearer-abcdef", "key-123456"]
    assert secret_values(am) == ["pa55word"]
    scrubber = Scrubber(secret_values(slack))
    line = scrubber.text(f"POST {SLACK_URL} failed; path /services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx")
    assert "abcdefghijklmnopqrstuvwx" not in line

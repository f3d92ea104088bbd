"""webhook/encode.py: Alertmanager webhook messages (version 4) that a receiver written for Alertmanager accepts."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.webhook.config import WebhookTargetConfig
from kube_audit_shipper.sinks.webhook.encode import WebhookEncoder
from tests.support.webhook_server import check_message
from tests.unit.sinks.alerts.alerts import exec_alert, mixed, public_failures_alert, records, secret_alert


def encoder(**kw: Any) -> WebhookEncoder:
    return WebhookEncoder(msgspec.convert({"name": "hook", "url": "http://x/hook", **kw}, WebhookTargetConfig), node="cp-1")


def message(request: Any) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.json.decode(request.payload)
    return result


def test_alerts_of_a_rule_share_a_message_as_alertmanager_groups_them() -> None:
    alerts = [exec_alert(1), secret_alert(2), exec_alert(3), public_failures_alert(4)]
    requests = encoder(receiver="kube-audit", external_url="https://console.example").encode(records(alerts))
    by_rule = {message(r)["groupLabels"]["alertname"]: message(r) for r in requests}
    assert set(by_rule) == {"exec-into-container", "secret-read-by-human", "public-access-failures"}
    execs = by_rule["exec-into-container"]
    assert check_message(execs, time.time()) == []  # the strict receiver's check, field by field
    assert execs["version"] == "4" and execs["status"] == "firing" and execs["truncatedAlerts"] == 0
    assert execs["receiver"] == "kube-audit" and execs["externalURL"] == "https://console.example"
    assert execs["groupKey"] == '{}:{alertname="exec-into-container"}'
    assert execs["commonLabels"] == {"alertname": "exec-into-container", "severity": "high", "cluster": "prod-hz", "node": "cp-1"}
    assert [a["labels"]["alert_id"] for a in execs["alerts"]] == [alerts[0].id, alerts[2].id]
    assert all(a["status"] == "firing" and a["generatorURL"] == "" for a in execs["alerts"])
    assert [list(r.indices) for r in requests if message(r)["groupLabels"]["alertname"] == "exec-into-container"] == [[0, 2]]


def test_every_message_passes_the_receivers_check_and_no_alert_is_lost() -> None:
    alerts = mixed(120)
    for group_by in ([], ["alertname"], ["alertname", "severity", "namespace_absent"]):
        requests = encoder(group_by=group_by, max_alerts_per_message=25).encode(records(alerts))
        seen = []
        for r in requests:
            msg = message(r)
            assert check_message(msg, time.time()) == [], msg
            assert len(msg["alerts"]) <= 25
            seen += [a["labels"]["alert_id"] for a in msg["alerts"]]
        assert sorted(seen) == sorted(a.id for a in alerts)


def test_a_batch_in_one_group_is_cut_into_messages_by_count_and_bytes() -> None:
    alerts = [exec_alert(i) for i in range(50)]
    by_count = encoder(max_alerts_per_message=8).encode(records(alerts))
    assert [len(message(r)["alerts"]) for r in by_count] == [8, 8, 8, 8, 8, 8, 2]
    by_bytes = encoder(max_request_bytes=16 << 10).encode(records(alerts))
    assert len(by_bytes) > 1 and all(len(r.payload) <= 16 << 10 for r in by_bytes)


def test_ends_at_is_stamped_per_attempt() -> None:
    enc = encoder(resolve_after_s=120)
    (request,) = enc.encode(records([exec_alert(1)]))
    later = time.time_ns() + 7200 * 10**9
    stamped = msgspec.json.decode(enc.stamp(request, later))
    assert alert_format.parse_time_ns(stamped["alerts"][0]["endsAt"]) == later + 120 * 10**9


def test_split_keeps_the_group() -> None:
    enc = encoder()
    (request,) = enc.encode(records([exec_alert(i) for i in range(5)]))
    parts = enc.split(request, [])
    assert [len(message(p)["alerts"]) for p in parts] == [2, 3]
    assert all(message(p)["groupLabels"] == {"alertname": "exec-into-container"} for p in parts)
    assert sorted(i for p in parts for i in p.indices) == [0, 1, 2, 3, 4]

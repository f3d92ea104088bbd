"""alertmanager/encode.py: alerts as Alertmanager's API v2 alerts, requests within limits, endsAt stamped at send time."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from kube_audit_shipper.sinks.alertmanager.config import AlertmanagerTargetConfig
from kube_audit_shipper.sinks.alertmanager.encode import AlertmanagerEncoder, fingerprint, label_set_string
from kube_audit_shipper.sinks.alerts import format as alert_format
from tests.unit.sinks.alerts.alerts import exec_alert, mixed, public_failures_alert, records, secret_alert

HOUR_NS = 3600 * 10**9


def encoder(**kw: Any) -> AlertmanagerEncoder:
    return AlertmanagerEncoder(msgspec.convert({"name": "am", "url": "http://am:9093", **kw}, AlertmanagerTargetConfig), node="node-from-agent")


def posted(request: Any, now_ns: int | None = None, enc: AlertmanagerEncoder | None = None) -> list[dict[str, Any]]:
    body = request.payload if now_ns is None else (enc or encoder()).stamp(request, now_ns)
    result: list[dict[str, Any]] = msgspec.json.decode(body)
    return result


def test_an_exec_alert_becomes_an_alertmanager_alert() -> None:
    alert = exec_alert(3)
    (request,) = encoder(generator_url="https://grafana.example/explore?audit={audit_id}&rule={rule}").encode(records([alert]))
    (am,) = posted(request)
    assert am["labels"] == {
        "alertname": "exec-into-container",
        "severity": "high",
        "alert_id": alert.id,
        "cluster": "prod-hz",
        "node": "cp-1",
    }
    assert am["annotations"]["summary"] == alert.summary
    assert "command: curl -s http://169.254.169.254/latest/meta-data/" in am["annotations"]["description"]
    assert am["startsAt"] == "2026-11-22T10:00:03.123456Z"
    assert am["generatorURL"] == f"https://grafana.example/explore?audit={alert.audit_ids[0]}&rule=exec-into-container"
    assert request.headers == {"Content-Type": "application/json"} and request.indices == [0]


def test_configured_labels_cluster_fallback_fields_and_annotations() -> None:
    alert = public_failures_alert(1, node=None)
    enc = encoder(cluster="dev", labels={"team": "platform"}, label_fields=["source_ip", "missing"], annotations={"runbook_url": "https://wiki/x"})
    (am,) = posted(enc.encode(records([alert]))[0])
    assert am["labels"] == {
        "alertname": "public-access-failures",
        "severity": "critical",
        "alert_id": alert.id,
        "team": "platform",
        "cluster": "dev",
        "node": "node-from-agent",
        "group": "198.51.100.2",
        "source_ip": "198.51.100.2",
    }
    assert am["annotations"]["runbook_url"] == "https://wiki/x"
    assert "count: 42" in am["annotations"]["description"]


def test_ends_at_is_resolve_after_the_later_of_the_event_and_the_sending() -> None:
    enc = encoder(resolve_after_s=600)
    old, fresh = exec_alert(1), exec_alert(2)
    (request,) = enc.encode(records([old, fresh]))
    starts = alert_format.parse_time_ns(old.time)
    assert starts is not None
    # sent long after the event (a backlog, hours of retries): still active when it arrives
    now = starts + 30 * HOUR_NS
    ends = [alert_format.parse_time_ns(a["endsAt"]) for a in posted(request, now, enc)]
    assert ends == [now + 600 * 10**9] * 2
    # sent before the event time (a node clock behind the apiserver's): from the event
    early = starts - HOUR_NS
    assert alert_format.parse_time_ns(posted(request, early, enc)[0]["endsAt"]) == starts + 600 * 10**9
    # the payload made at encode time was stamped then
    encoded_end = alert_format.parse_time_ns(posted(request)[0]["endsAt"])
    assert encoded_end is not None and abs(encoded_end - (time.time_ns() + 600 * 10**9)) < 60 * 10**9


def test_the_same_detection_twice_in_a_batch_is_sent_once_for_both_records() -> None:
    a, b = exec_alert(1), exec_alert(2)
    (request,) = encoder().encode(records([a, b, a, a]))
    assert [x["labels"]["alert_id"] for x in posted(request)] == [a.id, b.id]
    assert sorted(request.indices) == [0, 1, 2, 3]
    assert request.meta["positions"] == [[0, 2, 3], [1]]


def test_records_that_are_no_alert_get_requests_of_their_own() -> None:
    batch = records([exec_alert(1)]) + [b"{}"] + records([exec_alert(2)])
    requests = encoder().encode(batch)
    assert [list(r.indices) for r in requests] == [[1], [0, 2]]
    assert alert_format.INVALID in requests[0].meta


@pytest.mark.parametrize(("limits", "most"), [({"max_alerts_per_request": 7}, 7), ({"max_request_bytes": 16 << 10}, None)])
def test_requests_stay_within_the_limits(limits: dict[str, int], most: int | None) -> None:
    alerts = mixed(100)
    requests = encoder(**limits).encode(records(alerts))
    assert len(requests) > 1
    seen = [a["labels"]["alert_id"] for r in requests for a in posted(r)]
    assert sorted(seen) == sorted(a.id for a in alerts)
    for r in requests:
        if most is not None:
            assert len(posted(r)) <= most
        else:
            assert len(r.payload) <= 16 << 10
    assert sorted(i for r in requests for i in r.indices) == list(range(100))


def test_split_halves_a_request_and_a_single_alert_cannot_be_split() -> None:
    enc = encoder()
    (request,) = enc.encode(records(mixed(9)))
    parts = enc.split(request, [])
    assert [len(posted(p)) for p in parts] == [4, 5]
    assert sorted(i for p in parts for i in p.indices) == sorted(request.indices)
    (single,) = enc.encode(records([secret_alert(1)]))
    assert enc.split(single, []) == []


def test_a_broken_time_starts_now_and_a_lone_surrogate_makes_no_alert() -> None:
    before = time.time_ns()
    (request,) = encoder().encode([msgspec.json.encode(exec_alert(1, time="not a time"))])
    starts = alert_format.parse_time_ns(posted(request)[0]["startsAt"])
    assert starts is not None and before - 10**9 <= starts <= time.time_ns()
    # JSON with a lone surrogate escape is no valid text: the record is refused, never sent as broken UTF-8
    record = msgspec.json.encode(exec_alert(2)).replace(b'"container":"app"', b'"container":"a\\ud800b"')
    (request,) = encoder().encode([record])
    assert alert_format.INVALID in request.meta


def test_fingerprint_and_label_set_string_are_alertmanagers() -> None:
    # from a real Alertmanager 0.25: GET /api/v2/alerts after posting {alertname="x", severity="high"}
    assert fingerprint({"alertname": "x", "severity": "high"}) == "48660bf9de37d7b7"
    assert label_set_string({"severity": "high", "alertname": 'a "b"'}) == '{alertname="a \\"b\\"", severity="high"}'

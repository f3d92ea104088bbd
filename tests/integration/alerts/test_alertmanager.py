"""The alertmanager target against a real Alertmanager (Debian's prometheus-alertmanager): alerts pushed through the
delivery engine are read back with GET /api/v2/alerts, labels, annotations and times checked; Alertmanager's own
answers classified; and Alertmanager's webhook bodies accepted by the strict webhook receiver the webhook target is
tested against (so that receiver is as strict as the real thing, and no stricter)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Rejected, Request, Split
from kube_audit_shipper.sinks.alertmanager.config import AlertmanagerTargetConfig
from kube_audit_shipper.sinks.alertmanager.encode import Shaped, fingerprint
from kube_audit_shipper.sinks.alertmanager.sink import AlertmanagerSink
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.webhook.config import WebhookTargetConfig
from kube_audit_shipper.sinks.webhook.encode import WebhookEncoder
from tests.integration.alerts.engine import dead_letters, ship
from tests.support import alertmanager as support
from tests.support.alertmanager import Alertmanager
from tests.support.sink_context import context
from tests.support.wait import until_blocking
from tests.support.webhook_server import WebhookReceiver
from tests.unit.sinks.alerts.alerts import exec_alert, mixed, public_failures_alert, records

MS = 1_000_000


def make(url: str, **kw: Any) -> AlertmanagerSink:
    return AlertmanagerSink(
        msgspec.convert({"type": "alertmanager", "name": "am", "url": url, **kw}, AlertmanagerTargetConfig), context("/var/lib/kas", node="cp-9")
    )


def by_id(am: Alertmanager) -> dict[str, dict[str, Any]]:
    return {a["labels"]["alert_id"]: a for a in am.alerts()}


def test_alerts_reach_alertmanager_with_their_labels_annotations_and_times(alertmanager: Alertmanager, dl: DeadLetterStore) -> None:
    alerts = mixed(40)
    sink = make(alertmanager.url, cluster="dev-fallback", labels={"team": "platform"}, label_fields=["namespace"], resolve_after_s=1800)
    started = time.time_ns()
    runner = ship(sink, records(alerts), dl, max_events=16)  # 3 batches
    sent = time.time_ns()
    assert dead_letters(dl) == {} and runner.shipped_events == 40
    stored = by_id(alertmanager)
    assert set(stored) == {a.id for a in alerts}
    for alert in alerts:
        got = stored[alert.id]
        want = {"alertname": alert.rule, "severity": alert.severity, "alert_id": alert.id, "team": "platform"}
        want["cluster"] = alert.cluster or "dev-fallback"
        want["node"] = alert.node or "cp-9"
        if alert.group:
            want["group"] = alert.group
        if alert.fields.get("namespace"):
            want["namespace"] = alert.fields["namespace"]
        assert got["labels"] == want
        assert got["annotations"]["summary"] == alert.summary
        assert got["annotations"]["description"] == alert_format.description(alert)
        assert got["status"]["state"] == "active"
        # Alertmanager keeps milliseconds
        starts, ends = alert_format.parse_time_ns(got["startsAt"]), alert_format.parse_time_ns(got["endsAt"])
        event = alert_format.parse_time_ns(alert.time)
        assert starts is not None and ends is not None and event is not None
        assert starts // MS == event // MS
        assert started - MS + 1800 * 10**9 <= ends <= sent + MS + 1800 * 10**9  # resolves 30 minutes after it was sent
        assert got["fingerprint"] == fingerprint(got["labels"])


def test_sending_the_same_detections_again_updates_them_never_duplicates(alertmanager: Alertmanager, tmp_path: Path) -> None:
    alerts = [exec_alert(i) for i in range(10)] + [public_failures_alert(1)]
    for round_ in range(2):  # a crash replays what was sent before the last checkpoint
        dl = DeadLetterStore(tmp_path / f"state{round_}", max_bytes=1 << 20, max_event_bytes=1 << 20)
        ship(make(alertmanager.url), records(alerts + alerts[:3]), dl)
        assert dead_letters(dl) == {}
        dl.close()
    assert sorted(by_id(alertmanager)) == sorted(a.id for a in alerts)


def attempt(sink: AlertmanagerSink, request: Request) -> Outcome:
    async def run() -> Outcome:
        try:
            result: Any = await sink.send(request)
        except Exception as exc:
            result = exc
        await sink.aclose()  # the client belongs to this event loop
        return sink.classify(request, result)

    return asyncio.run(run())


def shaped(labels: dict[str, str], key: str) -> Shaped:
    body = {"labels": labels, "annotations": {"summary": "s"}, "startsAt": "2026-11-22T10:00:00Z"}
    return Shaped(key, body, 1795341600 * 10**9)


def test_alertmanagers_refusal_isolates_the_refused_alert(alertmanager: Alertmanager) -> None:
    sink = make(alertmanager.url)
    good = shaped({"alertname": "exec-into-container", "alert_id": "good-1"}, "good-1")
    bad = shaped({"alertname": "exec-into-container", "0bad": "x"}, "bad-1")  # a label name Alertmanager refuses
    both = Request(b"", [0, 1], {"Content-Type": "application/json"}, meta={"alerts": [good, bad], "positions": [[0], [1]]})
    outcome = attempt(sink, both)
    assert outcome == Split('refused: HTTP 400: invalid label set: invalid name "0bad" (isolating the refused alert)')
    first, second = sink.split(both, [])
    assert attempt(sink, first) == Delivered()
    refused = attempt(sink, second)
    assert refused == Rejected('refused: HTTP 400: invalid label set: invalid name "0bad"', [1])
    assert "good-1" in by_id(alertmanager)


def test_a_wrong_route_prefix_and_a_dead_alertmanager(alertmanager: Alertmanager) -> None:
    (request,) = make(alertmanager.url).encode(records([exec_alert(1)]))
    wrong = attempt(make(alertmanager.url + "/nope"), request)
    assert isinstance(wrong, Blocked) and wrong.reason.startswith("not_found: HTTP 404")
    port = alertmanager.port
    alertmanager.stop()
    down = attempt(make(f"http://127.0.0.1:{port}"), request)
    assert type(down).__name__ == "Retry" and down.reason.startswith("connect_error:")  # type: ignore[union-attr]


def test_alertmanagers_webhook_bodies_pass_the_strict_receiver_and_match_ours(tmp_path: Path, dl: DeadLetterStore) -> None:
    alerts = [exec_alert(i) for i in range(5)] + [public_failures_alert(1)]
    with WebhookReceiver() as hook, Alertmanager(tmp_path / "am", webhook_url=hook.url) as am:
        ship(make(am.url), records(alerts), dl)
        until_blocking(lambda: len(hook.alerts()) >= len(alerts), what=lambda: f"Alertmanager's notifications (got {len(hook.alerts())}, {hook.problems})")
        assert hook.problems == [] and set(hook.statuses()) == {200}
        from_am = {a["labels"]["alert_id"]: a for a in hook.alerts()}
        assert set(from_am) == {a.id for a in alerts}
        # the webhook target sends the same alerts: same labels, fingerprints, annotations
        ours = WebhookEncoder(msgspec.convert({"name": "w", "url": hook.url}, WebhookTargetConfig), node="cp-9").encode(records(alerts))
        for request in ours:
            message = msgspec.json.decode(request.payload)
            for alert in message["alerts"]:
                theirs = from_am[alert["labels"]["alert_id"]]
                assert alert["labels"] == theirs["labels"] and alert["fingerprint"] == theirs["fingerprint"]
                assert alert["annotations"] == theirs["annotations"]
        group_keys = {m["groupKey"] for m in hook.messages}
        assert '{}:{alertname="exec-into-container"}' in group_keys


def test_a_missing_alertmanager_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(support, "binary", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"Alertmanager is not installed .*CI must install it"):
        support.require_binary()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"Alertmanager is not installed .*apt-get install prometheus-alertmanager"):
        support.require_binary()

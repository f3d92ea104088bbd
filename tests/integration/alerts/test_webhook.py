"""The webhook target against the strict Alertmanager-webhook receiver (tests/support/webhook_server.py): version 4
bodies receivers accept, authentication (bearer token file read again when rotated, basic auth, headers), TLS,
and conservation through the delivery engine while the receiver fails and refuses."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path
from typing import Any

import msgspec
import trustme

from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Request
from kube_audit_shipper.sinks.webhook.config import WebhookTargetConfig
from kube_audit_shipper.sinks.webhook.sink import WebhookSink
from tests.integration.alerts.engine import dead_letters, ship
from tests.support.sink_context import context
from tests.support.webhook_server import Answer, WebhookReceiver
from tests.unit.sinks.alerts.alerts import exec_alert, mixed, records


def make(url: str, **kw: Any) -> WebhookSink:
    return WebhookSink(msgspec.convert({"type": "webhook", "name": "hook", "url": url, **kw}, WebhookTargetConfig), context("/var/lib/kas"))


def attempt(sink: WebhookSink, request: Request) -> Outcome:
    async def run() -> Outcome:
        try:
            result: Any = await sink.send(request)
        except Exception as exc:
            result = exc
        await sink.aclose()
        return sink.classify(request, result)

    return asyncio.run(run())


def test_receivers_get_valid_version_4_messages_grouped_by_rule(receiver: WebhookReceiver, dl: DeadLetterStore) -> None:
    alerts = mixed(60)
    ship(make(receiver.url, receiver="soc", external_url="https://console.example"), records(alerts), dl)
    assert dead_letters(dl) == {} and receiver.problems == [] and set(receiver.statuses()) == {200}
    assert sorted(a["labels"]["alert_id"] for a in receiver.alerts()) == sorted(a.id for a in alerts)
    for message in receiver.messages:
        assert {a["labels"]["alertname"] for a in message["alerts"]} == {message["groupLabels"]["alertname"]}
        assert message["receiver"] == "soc" and message["externalURL"] == "https://console.example"


def test_authentication(tmp_path: Path, dl: DeadLetterStore) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    one = records([exec_alert(1)])
    with WebhookReceiver(bearer_token="first-token") as hook:
        sink = make(hook.url, bearer_token_file=str(token))
        assert attempt(sink, sink.encode(one)[0]) == Delivered()
        hook.bearer_token = "second-token"  # the token was rotated: the receiver wants the new one
        outcome = attempt(sink, sink.encode(one)[0])
        assert isinstance(outcome, Blocked) and outcome.reason.startswith("unauthorized: HTTP 401")
        token.write_text("second-token\n")
        os.utime(token, ns=(1, 2))
        assert attempt(sink, sink.encode(one)[0]) == Delivered()
        token.unlink()
        outcome = attempt(sink, sink.encode(one)[0])
        assert isinstance(outcome, Blocked) and outcome.reason.startswith("credentials: cannot read bearer_token_file")
    with WebhookReceiver(basic_auth=("soc", "pa55"), required_headers={"X-Tenant": "prod"}) as hook:
        good = make(hook.url, basic_auth={"username": "soc", "password": "pa55"}, headers={"X-Tenant": "prod"})
        assert attempt(good, good.encode(one)[0]) == Delivered()
        bad = make(hook.url, basic_auth={"username": "soc", "password": "wrong"}, headers={"X-Tenant": "prod"})
        outcome = attempt(bad, bad.encode(one)[0])
        assert isinstance(outcome, Blocked) and "pa55" not in outcome.reason and "wrong" not in outcome.reason
        assert hook.hits[0].headers["user-agent"].startswith("kube-audit-shipper/")


def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with WebhookReceiver(ssl_context=ctx) as hook:
        assert hook.url.startswith("https://")
        request = make(hook.url).encode(records([exec_alert(1)]))[0]
        unknown = attempt(make(hook.url), request)  # the system CAs do not know this one
        assert isinstance(unknown, Blocked) and unknown.reason.startswith("tls_error:")
        assert attempt(make(hook.url, tls={"ca_file": str(ca_file)}), request) == Delivered()
        missing = attempt(make(hook.url, tls={"ca_file": str(tmp_path / "nope.pem")}), request)
        assert isinstance(missing, Blocked) and missing.reason.startswith("tls_error: cannot load the TLS files")


def test_conservation_every_alert_delivered_or_dead_lettered_while_the_receiver_fails(dl: DeadLetterStore) -> None:
    poison = exec_alert(21, summary="POISONWORD")
    alerts = [poison if i == 21 else a for i, a in enumerate(mixed(90))]
    batch = records(alerts)
    batch.append(b'{"rule": 1}')

    def refuse(message: dict[str, Any]) -> Answer | None:
        if any(a["annotations"]["summary"] == "POISONWORD" for a in message["alerts"]):
            return 422, {"Content-Type": "text/plain"}, b"alert refused by policy\n"
        return None

    with WebhookReceiver(refuse=refuse) as hook:
        hook.inject(500, "boom")
        hook.inject_reset()
        hook.inject(429, "slow down", {"Retry-After": "0"})
        hook.inject(502, "bad gateway")
        runner = ship(make(hook.url, max_alerts_per_message=10), batch, dl, max_events=40)
        delivered = [a["labels"]["alert_id"] for a in hook.alerts()]
        assert hook.problems == []
    dead = dead_letters(dl)
    assert len(delivered) == len(set(delivered)) == 89
    assert set(delivered) | {poison.id} == {a.id for a in alerts}
    assert set(dead) == {poison.id, '{"rule": 1}'}
    assert dead[poison.id] == "sink hook: refused: HTTP 422: alert refused by policy"
    assert runner.shipped_events == 89 and runner.rejected_events == 2

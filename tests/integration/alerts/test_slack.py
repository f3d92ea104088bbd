"""The slack target against the strict Slack incoming-webhook test server (tests/support/slack_server.py): Block Kit
digests Slack accepts, a webhook that is gone, 429 with Retry-After, one message a second, and conservation through
the delivery engine while the server fails."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import msgspec

from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.config import RetryConfig
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Request, Retry
from kube_audit_shipper.sinks.http.throttle import LocalThrottle
from kube_audit_shipper.sinks.slack.config import SlackTargetConfig
from kube_audit_shipper.sinks.slack.sink import SlackSink
from tests.integration.alerts.engine import dead_letters, ship
from tests.support.sink_context import context
from tests.support.slack_server import SlackServer
from tests.unit.sinks.alerts.alerts import exec_alert, mixed, records


def make(server: SlackServer, **kw: Any) -> SlackSink:
    return SlackSink(msgspec.convert({"type": "slack", "name": "slack", "webhook_url": server.url, **kw}, SlackTargetConfig), context("/var/lib/kas"))


def attempt(sink: SlackSink, request: Request) -> tuple[Outcome, BaseException | None]:
    async def run() -> tuple[Outcome, BaseException | None]:
        error: BaseException | None = None
        try:
            result: Any = await sink.send(request)
        except Exception as exc:
            result = error = exc
        await sink.aclose()
        return sink.classify(request, result), error

    return asyncio.run(run())


def ids(server: SlackServer) -> list[str]:
    out = []
    for msg in server.messages:
        for block in msg["blocks"]:
            if block["type"] == "context":
                out += [m[1] for e in block["elements"] if (m := re.fullmatch(r"id (.+)", e["text"]))]
    return out


def test_digests_reach_slack_one_a_second(slack: SlackServer, dl: DeadLetterStore) -> None:
    alerts = mixed(40)
    ship(make(slack), records(alerts), dl)  # 3 messages of at most 16 alerts
    assert dead_letters(dl) == {} and slack.problems == [] and slack.rate_limited == 0
    assert len(slack.messages) == 3 and sorted(ids(slack)) == sorted(a.id for a in alerts)
    assert all(h.headers["content-type"].startswith("application/json") for h in slack.hits)


def test_a_webhook_that_is_gone_blocks() -> None:
    with SlackServer() as server:
        sink = make(server)
        request = sink.encode(records([exec_alert(1)]))[0]
        for status, code in ((404, "no_service"), (410, "channel_is_archived"), (403, "invalid_token"), (403, "action_prohibited")):
            server.disable(status, code)
            outcome, _ = attempt(make(server), request)
            assert isinstance(outcome, Blocked) and outcome.reason.startswith(f"{code}: HTTP {status}") and server.path not in outcome.reason
        wrong = make(server, webhook_url=server.base_url + "/services/T0/B0/Zq8RevokedSecret")
        outcome, _ = attempt(wrong, request)
        assert isinstance(outcome, Blocked) and "Zq8RevokedSecret" not in outcome.reason


def test_a_429_pauses_every_message_for_its_retry_after() -> None:
    with SlackServer(per_second=1) as server:
        first, second = make(server), make(server)  # two agents posting to one webhook
        one, two = first.encode(records([exec_alert(1)]))[0], second.encode(records([exec_alert(2)]))[0]
        assert attempt(first, one)[0] == Delivered()
        outcome, _ = attempt(second, two)
        assert outcome == Retry("rate_limited: HTTP 429: rate_limited", 1.0)
        hits = len(server.hits)
        outcome, error = attempt(second, two)  # paused: not even sent
        assert isinstance(error, LocalThrottle) and isinstance(outcome, Retry) and 0 < (outcome.after_s or 0) <= 1.0
        assert len(server.hits) == hits


def test_the_engine_keeps_to_one_message_a_second(dl: DeadLetterStore) -> None:
    with SlackServer(per_second=1) as server:
        sink = make(server, max_alerts_per_message=1)
        runner = ship(sink, records([exec_alert(n) for n in range(3)]), dl, retry=RetryConfig(initial_ms=1, max_ms=100))
        assert len(server.messages) == 3 and server.rate_limited == 0
        assert runner.retries >= 2 and sink.window.throttled >= 2


def test_conservation_every_alert_delivered_or_dead_lettered_while_slack_fails(dl: DeadLetterStore) -> None:
    poison = exec_alert(33, summary="POISONWORD in the command line")
    alerts = [poison if i == 33 else a for i, a in enumerate(mixed(80))]
    batch = records(alerts)
    batch.insert(5, b"[1, 2, 3]")
    with SlackServer(per_second=50, refuse_words={"POISONWORD": (400, "invalid_blocks")}) as server:
        server.inject(500, "rollup_error")
        server.inject_reset()
        server.inject(429, "rate_limited", {"Retry-After": "0"})
        server.inject(503, "")
        sink = make(server, rate_messages=50, rate_window_s=50)
        runner = ship(sink, batch, dl, max_events=100)
        delivered = ids(server)
    dead = dead_letters(dl)
    assert len(delivered) == len(set(delivered)) == 79
    assert set(delivered) | {poison.id} == {a.id for a in alerts}
    assert set(dead) == {poison.id, "[1, 2, 3]"}
    assert dead[poison.id] == "sink slack: refused: HTTP 400: invalid_blocks"
    assert runner.shipped_events == 79 and runner.rejected_events == 2
    assert server.problems == []  # only the poison was refused, for its word: every message had valid blocks

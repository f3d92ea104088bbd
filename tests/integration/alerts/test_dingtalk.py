"""The dingtalk target against the strict DingTalk robot test server (tests/support/dingtalk_server.py): signed
digests, DingTalk's security answers, a fresh signature per attempt, never more than 20 messages a minute, the
10-minute throttle after errcode 130101, and conservation through the delivery engine while the server fails."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.config import RetryConfig
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Request, Retry
from kube_audit_shipper.sinks.dingtalk.config import DingTalkTargetConfig
from kube_audit_shipper.sinks.dingtalk.sink import DingTalkSink
from kube_audit_shipper.sinks.http.throttle import LocalThrottle
from tests.integration.alerts.engine import dead_letters, ship
from tests.support.dingtalk_server import DingTalkServer
from tests.support.sink_context import context
from tests.unit.sinks.alerts.alerts import exec_alert, mixed, records


class Clock:
    """One clock for the sink's rate window and the server's: tests step through minutes without waiting."""

    def __init__(self, now: float = 1_795_341_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def ms(self) -> int:
        return int(self.now * 1000)


def make(server: DingTalkServer, clock: Clock | None = None, **kw: Any) -> DingTalkSink:
    cfg = msgspec.convert(
        {"type": "dingtalk", "name": "ding", "url": server.url, "access_token": "token-1", "secret": "SEC-test-secret", **kw}, DingTalkTargetConfig
    )
    if clock is None:
        return DingTalkSink(cfg, context("/var/lib/kas"))
    return DingTalkSink(cfg, context("/var/lib/kas"), clock=clock, wall_clock_ms=clock.ms)


def attempt(sink: DingTalkSink, request: Request) -> tuple[Outcome, BaseException | None]:
    async def run() -> tuple[Outcome, BaseException | None]:
        error: BaseException | None = None
        try:
            result: Any = await sink.send(request)
        except Exception as exc:
            result = error = exc
        await sink.aclose()
        return sink.classify(request, result), error

    return asyncio.run(run())


def ids(server: DingTalkServer, token: str = "token-1") -> list[str]:
    return [re.sub(r"\\(.)", r"\1", m) for msg in server.messages(token) for m in re.findall(r"· id (\S+)", msg["markdown"]["text"])]


def test_signed_digests_of_100_alerts_reach_the_robot(dingtalk: DingTalkServer, dl: DeadLetterStore) -> None:
    alerts = mixed(100)
    ship(make(dingtalk), records(alerts), dl)
    assert dead_letters(dl) == {}
    assert set(dingtalk.statuses()) == {200} and all(b'"errcode": 0' in h.answer for h in dingtalk.hits)
    assert len(dingtalk.messages()) == 5 and sorted(ids(dingtalk)) == sorted(a.id for a in alerts)
    assert all(len(h.body) <= 20000 for h in dingtalk.hits)


def test_dingtalks_security_answers_block_with_the_fix_named() -> None:
    one = records([exec_alert(1)])
    with DingTalkServer(robots={"token-1": "SEC-test-secret", "kw": None}, keywords={"kw": ("审计告警",)}) as server:
        cases = [
            (make(server, secret="SEC-wrong"), "sign not match", "`secret`"),
            (make(server, access_token="no-such-robot"), "token is not exist", "access_token"),
            (make(server, access_token="kw", secret=None), "keywords not in content", "`title`"),
        ]
        for sink, said, fix in cases:
            outcome, _ = attempt(sink, sink.encode(one)[0])
            assert isinstance(outcome, Blocked) and said in outcome.reason and fix in outcome.reason, outcome
        keyword = make(server, access_token="kw", secret=None, title="审计告警 kube-audit")
        assert attempt(keyword, keyword.encode(one)[0])[0] == Delivered()
    clock = Clock()
    with DingTalkServer(clock=lambda: clock.now + 2 * 3600) as skewed:  # the node's clock two hours behind DingTalk's
        sink = make(skewed, clock)
        outcome, _ = attempt(sink, sink.encode(one)[0])
        assert isinstance(outcome, Blocked) and "invalid timestamp" in outcome.reason and "clock" in outcome.reason


def test_every_attempt_is_signed_afresh(dingtalk: DingTalkServer, dl: DeadLetterStore) -> None:
    dingtalk.inject(502, "bad gateway")
    dingtalk.inject(200, '{"errcode":-1,"errmsg":"系统繁忙"}', {"Content-Type": "application/json"})
    start = time.time_ns() // 1_000_000
    stamps = iter(range(start, start + 10**9, 1500))  # each call of the wall clock 1.5 s later
    cfg = msgspec.convert({"type": "dingtalk", "name": "d", "url": dingtalk.url, "access_token": "token-1", "secret": "SEC-test-secret"}, DingTalkTargetConfig)
    sink = DingTalkSink(cfg, context("/var/lib/kas"), wall_clock_ms=lambda: next(stamps))
    ship(sink, records([exec_alert(1)]), dl)
    queries = [parse_qs(urlsplit(h.path).query) for h in dingtalk.hits]
    assert [q["timestamp"][0] for q in queries] == [str(start), str(start + 1500), str(start + 3000)]
    assert len({q["sign"][0] for q in queries}) == 3 and len(dingtalk.messages()) == 1


def test_never_more_than_20_messages_a_minute() -> None:
    clock = Clock()
    with DingTalkServer(clock=clock) as server:
        sink = make(server, clock, max_alerts_per_message=1)
        requests = sink.encode(records(mixed(50)))
        throttled = 0
        for request in requests:
            while True:
                outcome, error = attempt(sink, request)
                if isinstance(error, LocalThrottle):  # the engine would wait this long: so does the test, on the clock
                    assert isinstance(outcome, Retry) and outcome.after_s == error.after_s > 0
                    throttled += 1
                    clock.now += error.after_s
                    continue
                assert outcome == Delivered()
                clock.now += 0.2  # the next message is ready at once
                break
        assert server.throttle_answers == 0 and len(server.messages()) == 50
        assert throttled >= 2
        times = server.accepted_times()
        assert all(sum(1 for u in times[i:] if u - t < 60) <= 20 for i, t in enumerate(times))
        assert times[-1] - times[0] >= 120  # 50 messages need two full minutes


def test_errcode_130101_stops_every_message_for_the_throttle() -> None:
    clock = Clock()
    with DingTalkServer(clock=clock) as server:
        first, second = make(server, clock), make(server, clock)  # two agents sharing one robot
        for n in range(20):
            assert attempt(first, first.encode(records([exec_alert(n)]))[0])[0] == Delivered()
        request = second.encode(records([exec_alert(99)]))[0]
        outcome, _ = attempt(second, request)
        assert outcome == Retry("throttled: errcode 130101: send too fast, exceed 20 times per minute (DingTalk throttles a robot for 10 minutes)", 600.0)
        hits = len(server.hits)
        clock.now += 300  # half the throttle later: the target does not even try
        outcome, error = attempt(second, request)
        assert isinstance(error, LocalThrottle) and isinstance(outcome, Retry) and 299 <= (outcome.after_s or 0) <= 300.01
        assert len(server.hits) == hits
        clock.now += 300.1
        assert attempt(second, request)[0] == Delivered()


def test_the_engine_waits_out_the_rate_limit(dl: DeadLetterStore) -> None:
    with DingTalkServer() as server:
        sink = make(server, max_alerts_per_message=1, rate_messages=1, rate_window_s=3)
        runner = ship(sink, records([exec_alert(n) for n in range(3)]), dl, retry=RetryConfig(initial_ms=1, max_ms=100))
        times = server.accepted_times()
        assert len(times) == 3 and server.throttle_answers == 0
        assert all(b - a >= 2.9 for a, b in zip(times, times[1:]))  # the server's clock: no two messages within 3 s
        assert runner.retries >= 2 and sink.window.throttled >= 2


def test_conservation_every_alert_delivered_or_dead_lettered_while_the_server_fails(dl: DeadLetterStore) -> None:
    poison = exec_alert(57, summary="POISONWORD in the command line")
    alerts = [poison if i == 57 else a for i, a in enumerate(mixed(100))]
    batch = records(alerts)
    batch[10:10] = [b"not an alert", b'{"rule": "half an alert"}']
    with DingTalkServer(refuse_words={"POISONWORD": (430101, "消息包含敏感词")}) as server:
        server.inject(500, "internal error")
        server.inject_reset()
        server.inject(200, '{"errcode":-1,"errmsg":"系统繁忙"}', {"Content-Type": "application/json"})
        runner = ship(make(server, max_alerts_per_message=25), batch, dl, max_events=200)
        delivered = ids(server)
        dead = dead_letters(dl)
    assert len(delivered) == len(set(delivered)) == 99
    assert set(delivered) | {poison.id} == {a.id for a in alerts}
    assert set(dead) == {poison.id, "not an alert", '{"rule": "half an alert"}'}
    assert dead[poison.id] == "sink ding: refused: errcode 430101: 消息包含敏感词"
    assert all(dead[k].startswith("sink ding: invalid_alert:") for k in dead if k != poison.id)
    assert server.throttle_answers == 0 and len(server.hits) <= 20
    assert runner.rejected_events == 3 and runner.shipped_events == 99

"""Engine semantics: one alert per request across stages, aggregates count each auditID once, event time only,
dedup, bounded state with counted overflow, lazy bodies, the index, counters, and snapshot/restore."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kube_audit_shipper.model import Alert, alert_decoder, alert_encoder
from kube_audit_shipper.process.detect import context as detect_context
from kube_audit_shipper.process.detect.build import RuleCatalog, load_catalog, parse_rules_text
from kube_audit_shipper.process.detect.config import DetectConfig, RuleTuning
from kube_audit_shipper.process.detect.engine import DetectionEngine
from kube_audit_shipper.process.policy.event import decode_event
from tests.unit.process.detect.audit_events import audit_id, line, pod

PACK = load_catalog(DetectConfig())
PUBLIC = "81.2.69.142"
ANON = ("system:anonymous", ["system:unauthenticated"])


def engine(**bounds: int) -> DetectionEngine:
    return DetectionEngine(PACK.enabled, **bounds)


def rules(text: str) -> RuleCatalog:
    catalog = RuleCatalog()
    problems: list[str] = []
    parse_rules_text(text, "test.yaml", catalog, problems)
    assert problems == []
    return catalog


def at(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"2026-11-22T{10 + hours:02d}:{minutes:02d}:{rest:09.6f}Z"


def feed(e: DetectionEngine, lines: list[bytes]) -> list[Alert]:
    return [alert for raw in lines for alert in e.evaluate_line(raw)]


def exec_stages(stages: list[str], request: str | None = None) -> list[bytes]:
    request = request or audit_id()
    return [
        line("create", "pods", namespace="default", name="web-0", subresource="exec", query="command=id", stage=stage, code=101, audit=request, time=at(index))
        for index, stage in enumerate(stages)
    ]


def test_exec_fires_once_at_response_started_not_again_at_response_complete():
    e = engine()
    started, complete = exec_stages(["ResponseStarted", "ResponseComplete"])
    assert [alert.rule for alert in e.evaluate_line(started)] == ["exec-into-container"]
    assert e.evaluate_line(complete) == []
    assert e.stats.alerts["exec-into-container"] == 1
    assert e._inflight == {}  # the final stage released the request


def test_response_complete_alone_fires_and_request_received_is_not_evaluated():
    e = engine()
    received, complete = exec_stages(["RequestReceived", "ResponseComplete"])
    assert e.evaluate_line(received) == []
    assert e.stats.skipped_stage == 1
    assert [alert.rule for alert in e.evaluate_line(complete)] == ["exec-into-container"]


def test_two_requests_two_alerts():
    e = engine()
    alerts = feed(e, exec_stages(["ResponseStarted", "ResponseComplete"]) + exec_stages(["ResponseStarted", "ResponseComplete"]))
    assert len(alerts) == 2 and alerts[0].id != alerts[1].id
    assert alerts[0].id == f"exec-into-container:{alerts[0].audit_ids[0]}"


def failing_watch(ip: str, seconds: float, code: int = 403) -> list[bytes]:
    """One watch request recorded at ResponseStarted and ResponseComplete (same auditID)."""
    request = audit_id()
    return [
        line("watch", "secrets", code=code, source_ip=ip, user=ANON, stage=stage, audit=request, time=at(seconds + offset))
        for offset, stage in ((0, "ResponseStarted"), (1, "ResponseComplete"))
    ]


def test_aggregates_count_each_request_once():
    e = engine()
    first = [raw for index in range(5) for raw in failing_watch(PUBLIC, index * 5)]
    assert len(first) == 10  # ten events, five requests: not enough
    assert [alert for alert in feed(e, first) if alert.rule == "public-access-failures"] == []
    second = [raw for index in range(5, 10) for raw in failing_watch(PUBLIC, index * 5)]
    alerts = [alert for alert in feed(e, second) if alert.rule == "public-access-failures"]
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.count == 10 and alert.fields["requests"] == 10 and alert.fields["failure_rate"] == 1.0 and alert.fields["forbidden"] == 10
    assert alert.group == PUBLIC and alert.window is not None and alert.window.seconds == 300
    assert len(alert.audit_ids) == 10 and alert.id.startswith(f"public-access-failures:{PUBLIC}:")


def test_aggregate_stays_quiet_for_its_dedup_period_then_fires_again():
    e = engine()
    burst = [line("get", "secrets", code=403, source_ip=PUBLIC, user=ANON, time=at(index)) for index in range(40)]
    assert sum(alert.rule == "public-access-failures" for alert in feed(e, burst)) == 1
    later = [line("get", "secrets", code=403, source_ip=PUBLIC, user=ANON, time=at(400 + index)) for index in range(10)]
    assert sum(alert.rule == "public-access-failures" for alert in feed(e, later)) == 1


def test_event_time_not_wall_clock_and_late_events_are_counted():
    e = engine()
    # Ten failures an hour apart each: processed in microseconds, never in one window.
    spread = [line("get", "secrets", code=403, source_ip=PUBLIC, user=ANON, time=at(index * 3600)) for index in range(10)]
    assert [alert for alert in feed(e, spread) if alert.rule == "public-access-failures"] == []
    # An event older than the window (the watermark is 9 hours in) is late: not counted, counted as late.
    feed(e, [line("get", "secrets", code=403, source_ip=PUBLIC, user=ANON, time=at(0))])
    assert e.stats.late["public-access-failures"] == 1


@pytest.mark.parametrize("stamp", ["2026-11-22T10:00:9e9999999Z", "2026-11-22T10:00:00+99:99", "2026-02-31T10:00:00Z", "yesterday", "0000-01-01T00:00:00Z"])
def test_unreadable_timestamps_use_the_watermark(stamp: str):
    e = engine()
    feed(e, exec_stages(["ResponseComplete"]))  # watermark 10:00:00
    raw = line("create", "pods", namespace="default", name="web-0", subresource="exec", query="command=id", time=stamp)
    (alert,) = e.evaluate_line(raw)
    assert alert.time == "2026-11-22T10:00:00.000000Z"
    assert not e.stats.errors


def test_dedup_per_rule_and_key_for_a_period_of_event_time():
    e = engine()

    def as_bob(seconds: float, target: str = "bob") -> bytes:
        return line("list", "pods", namespace="default", impersonated=target, time=at(seconds), user=("alice@example.com", ["system:authenticated"]))

    assert len([a for a in feed(e, [as_bob(0), as_bob(60), as_bob(599)]) if a.rule == "impersonation"]) == 1
    assert e.stats.suppressed["impersonation"] == 2
    assert len([a for a in feed(e, [as_bob(30, "carol")]) if a.rule == "impersonation"]) == 1  # another key
    (alert,) = [a for a in feed(e, [as_bob(601)]) if a.rule == "impersonation"]
    assert alert.group == "alice@example.com / bob"


def test_state_is_bounded_and_overflow_is_counted():
    e = engine(max_groups_per_rule=10, max_tracked_requests=5, max_dedup_keys=3)
    # 20 public addresses, one failing request each, inside one window: 10 groups kept, 10 dropped.
    feed(e, [line("get", "secrets", code=403, source_ip=f"81.2.69.{index}", user=ANON, time=at(index)) for index in range(1, 21)])
    counter = e.by_id["public-access-failures"].counter
    assert counter is not None and len(counter.groups) == 10
    assert e.stats.overflow["groups:public-access-failures"] == 10
    # 8 exec sessions still open (ResponseStarted only): 5 remembered.
    for _ in range(8):
        feed(e, exec_stages(["ResponseStarted"]))
    assert len(e._inflight) == 5 and e.stats.overflow["requests"] == 3
    # 5 impersonated users inside the dedup period: 3 keys kept.
    feed(e, [line("get", "pods", namespace="default", impersonated=f"user{index}", time=at(30)) for index in range(5)])
    assert len(e._dedup) == 3 and e.stats.overflow["dedup"] == 2


def test_bodies_are_decoded_lazily_and_at_most_once(monkeypatch: pytest.MonkeyPatch):
    calls = []
    real_decode = detect_context._decode_json

    def counting(raw: bytes) -> object:
        calls.append(bytes(raw)[:20])
        return real_decode(raw)

    monkeypatch.setattr(detect_context, "_decode_json", counting)
    e = engine()
    privileged = pod(
        containers=[{"name": "x", "image": "alpine", "securityContext": {"privileged": True}}], hostPID=True, volumes=[{"name": "r", "hostPath": {"path": "/"}}]
    )
    alerts = e.evaluate_line(line("create", "pods", namespace="default", name="x", request_object=privileged))
    assert {alert.rule for alert in alerts} == {"privileged-pod", "host-namespace-pod", "sensitive-hostpath-mount"}
    assert len(calls) == 1  # three rules, one decode
    calls.clear()
    e.evaluate_line(line("update", "configmaps", namespace="default", name="cfg", request_object={"kind": "ConfigMap", "data": {"a": "b"}}))
    assert calls == []  # no candidate rule reads the body of a configmap update


def test_index_keeps_rules_off_events_they_cannot_match():
    e = engine()
    exec_rules = {rule.id for _, rule in e._candidates(("create", "pods", "exec"))}
    assert "exec-into-container" in exec_rules and "privileged-pod" not in exec_rules
    lease = {rule.id for _, rule in e._candidates(("update", "leases", ""))}
    # only the rules that pin no resource are left for a lease renewal
    assert lease == {"public-access-failures", "anonymous-access-allowed", "impersonation", "forbidden-burst"}


def test_or_of_pinned_branches_is_indexed_by_their_union():
    catalog = rules(
        """
rules:
  - id: either
    severity: low
    match:
      or:
        - {and: [{field: verb, equals: delete}, {field: objectRef.resource, equals: pods}]}
        - {and: [{field: verb, in: [create, update]}, {field: objectRef.resource, equals: secrets}]}
"""
    )
    e = DetectionEngine(catalog.specs)
    assert e.rules[0].index[0] == frozenset({"delete", "create", "update"})
    assert e.rules[0].index[1] == frozenset({"pods", "secrets"})
    assert e._candidates(("get", "pods", "")) == ()


def test_counters():
    e = engine()
    feed(e, exec_stages(["ResponseComplete"]))
    e.evaluate_line(b"not json")
    e.evaluate_line(b'["an array"]')
    assert e.stats.alerts["exec-into-container"] == 1
    assert e.stats.undecodable == 2
    assert e.stats.events == 1 and e.stats.eval_seconds > 0


def test_alert_json_shape():
    e = engine()
    (alert,) = feed(e, exec_stages(["ResponseStarted"]))
    data = msgspec.json.decode(alert_encoder.encode(alert))
    assert {"rule", "severity", "time", "summary", "audit_ids", "fields", "tags", "id"} <= set(data)
    assert data["tags"] == ["T1609", "execution"]
    assert "count" not in data and "window" not in data
    assert alert_decoder.decode(alert_encoder.encode(alert)) == alert


# ---- snapshot / restore ----------------------------------------------------------------------------------------
def mixed_events(rng: random.Random, count: int) -> list[bytes]:
    """A stream that exercises every kind of state: open requests, dedup keys, aggregate groups, late and odd times."""
    out: list[bytes] = []
    clock = 0.0
    open_requests: list[str] = []
    for _ in range(count):
        clock += rng.expovariate(1 / 8)
        stamp = at(clock) if rng.random() > 0.03 else rng.choice(["bad", "2026-11-22T10:00:00+99:99"])
        if rng.random() < 0.05:
            stamp = at(max(0.0, clock - rng.uniform(0, 900)))  # out of order, sometimes late
        kind = rng.random()
        if kind < 0.3:
            out.append(line("get", "secrets", code=rng.choice([200, 403, 401, 404]), source_ip=f"81.2.69.{rng.randint(1, 4)}", user=ANON, time=stamp))
        elif kind < 0.45:
            request = audit_id()
            open_requests.append(request)
            out.append(
                line(
                    "create", "pods", namespace="default", name="w", subresource="exec", query="command=id", stage="ResponseStarted", audit=request, time=stamp
                )
            )
        elif kind < 0.55 and open_requests:
            request = open_requests.pop(rng.randrange(len(open_requests)))
            out.append(
                line(
                    "create", "pods", namespace="default", name="w", subresource="exec", query="command=id", stage="ResponseComplete", audit=request, time=stamp
                )
            )
        elif kind < 0.7:
            out.append(line("list", "pods", namespace="default", impersonated=rng.choice(["bob", "carol"]), time=stamp))
        elif kind < 0.85:
            resource = rng.choice(["pods", "secrets", "nodes", "services", "configmaps", "deployments"])
            out.append(line("list", resource, code=403, user=(rng.choice(["dev", "ops"]), ["system:authenticated"]), time=stamp))
        else:
            out.append(line("get", "secrets", namespace="default", name=rng.choice(["a", "b"]), time=stamp))
    return out


def run(lines: list[bytes], split: int | None = None) -> list[bytes]:
    e = engine(max_groups_per_rule=10, max_tracked_requests=100, max_dedup_keys=100)
    out: list[bytes] = []
    for index, raw in enumerate(lines):
        if index == split:
            saved = e.snapshot()
            e = engine(max_groups_per_rule=10, max_tracked_requests=100, max_dedup_keys=100)
            assert e.restore(saved) == []
            assert e.snapshot() == saved  # the restored state is the saved state
        out.extend(alert_encoder.encode(alert) for alert in e.evaluate_line(raw))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), split=st.integers(0, 399))
def test_restore_midstream_gives_the_same_alerts(seed: int, split: int):
    lines = mixed_events(random.Random(seed), 400)
    assert run(lines) == run(lines, split)


def test_the_mixed_stream_raises_every_kind_of_alert():
    """The determinism test above would be empty if the stream raised nothing."""
    alerts = {msgspec.json.decode(raw)["rule"] for raw in run(mixed_events(random.Random(7), 2000))}
    assert {"public-access-failures", "exec-into-container", "impersonation", "forbidden-burst", "secret-read-by-human"} <= alerts


def test_restore_drops_state_of_changed_or_removed_rules():
    e = engine()
    feed(e, [line("get", "secrets", code=403, source_ip=PUBLIC, user=ANON, time=at(0))])
    saved = e.snapshot()
    fewer = DetectionEngine([spec for spec in PACK.enabled if spec.id != "public-access-failures"])
    assert fewer.restore(saved) == ["public-access-failures: no such aggregate rule now; its saved groups are dropped"]
    tuned = load_catalog(DetectConfig(rules={"public-access-failures": RuleTuning(window_s=600)}))
    other = DetectionEngine(tuned.enabled)
    assert "changed" in other.restore(saved)[0]


def test_restore_refuses_what_is_not_a_snapshot():
    e = engine()
    with pytest.raises(ValueError, match="not a detection state snapshot"):
        e.restore(b"\x00garbage")
    with pytest.raises(ValueError, match="version"):
        e.restore(msgspec.msgpack.encode({"version": 99, "watermark": None, "inflight": [], "dedup": [], "aggregates": []}))


def test_decoded_events_and_lines_give_the_same_alerts():
    lines = mixed_events(random.Random(3), 300)
    by_line = run(lines)
    e = engine(max_groups_per_rule=10, max_tracked_requests=100, max_dedup_keys=100)
    by_event = [alert_encoder.encode(alert) for raw in lines for alert in e.evaluate(decode_event(raw))]
    assert by_line == by_event

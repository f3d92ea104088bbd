"""The report's building blocks: bounded tables, the timeline, timestamps, the time window, request bodies."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from kube_audit_shipper.report import bodies
from kube_audit_shipper.report.event import Clock
from kube_audit_shipper.report.tables import OTHER, KeyedTable, Recent, SeenIds
from kube_audit_shipper.report.timeline import Timeline
from kube_audit_shipper.report.window import TimeWindow, parse_bound


def test_keyed_table_folds_the_light_half_and_keeps_totals_exact() -> None:
    table = KeyedTable(100, width=2, max_columns=(1,))
    rng = random.Random(5)
    total = 0
    for i in range(5000):
        key = "heavy" if i % 10 == 0 else f"k{rng.randrange(100_000)}"
        row = table.row(key)
        row[0] += 1
        row[1] = max(row[1], i)
        total += 1
    assert len(table) <= 100 and table.folded > 0
    assert table.total() == total
    assert table.top(1)[0][0] == "heavy" and table.rows["heavy"][0] == 500
    rest = table.rest(table.top(1))
    assert rest[0] == total - 500 and rest[1] == 4999 - (4999 % 10 == 0)  # maxima merge, sums add
    assert OTHER == "(other)"


def test_keyed_table_clips_absurd_keys() -> None:
    table = KeyedTable(10)
    table.add("x" * 10_000)
    table.add("x" * 20_000)
    (key,) = table.rows
    assert len(key) == 200 and key.endswith("…") and table.rows[key] == [2]


def test_recent_and_seen_ids_are_bounded() -> None:
    recent: Recent[int] = Recent(3)
    for i in range(10):
        recent.append(i)
    assert recent.newest_first() == [9, 8, 7] and recent.count == 10
    seen = SeenIds(2)
    assert seen.first_time("a") and not seen.first_time("a")
    assert seen.first_time("b") and seen.first_time("c")  # "a" forgotten
    assert seen.first_time("a") and seen.first_time("") and seen.first_time("")


def test_timeline_widens_and_resamples_without_losing_counts() -> None:
    timeline = Timeline(max_buckets=64)
    start = 1_790_000_000
    for i in range(10_000):
        b = timeline.bucket(start + i * 37)
        timeline.add("events", b)
        if i % 3 == 0:
            timeline.add("failed", b)
    assert timeline.width_s > 60
    assert len(timeline.series["events"]) <= 64
    bars, first_s, step_s = timeline.resample("events", 20)
    assert sum(bars) == 10_000 and len(bars) <= 20
    assert first_s <= start < first_s + step_s
    assert sum(timeline.resample("failed", 20)[0]) == 3334
    assert timeline.resample("absent", 20)[0] == [0] * len(bars)


_NOON = datetime(2026, 11, 22, 10, 0, 3, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T10:00:03.123456Z", _NOON + 0.123456),
        ("2026-11-22T10:00:03Z", _NOON),
        ("2026-11-22T10:00:03.5+08:00", _NOON + 0.5 - 8 * 3600),
        ("2026-11-22 10:00:03.38", _NOON + 0.38),
        ("2026-11-22T10:00:59.999999999Z", _NOON + 56.999999999),
    ],
)
def test_clock_reads_every_accepted_form_and_its_cache_agrees(text: str, expected: float) -> None:
    clock = Clock()
    first = clock.parse(text)
    again = clock.parse(text)  # from the minute cache where the form allows it
    assert first == again
    assert first is not None and abs(first - expected) < 1e-6


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2026-11-22T10:00:9e99Z", "2026-11-22T10:00:nanZ", "2026-13-22T10:00:00Z", "2026-11-22T10:00:61Z", "2026-11-22T10:00:0.5Z"]
)
def test_clock_refuses_what_is_not_a_time(text: str) -> None:
    clock = Clock()
    clock.parse("2026-11-22T10:00:01Z")  # warm the minute cache for the same minute
    assert clock.parse(text) is None


def test_time_bounds() -> None:
    now = 1_800_000_000.0
    assert parse_bound("24h", now) == now - 86_400
    assert parse_bound("1h30m", now) == now - 5_400
    assert parse_bound("7d", now) == now - 7 * 86_400
    assert parse_bound("2026-11-22", now) == datetime(2026, 11, 22, tzinfo=UTC).timestamp()
    assert parse_bound("2026-11-22T10:00:00+01:00", now) == datetime(2026, 11, 22, 9, tzinfo=UTC).timestamp()
    with pytest.raises(ValueError, match="neither an RFC 3339 time"):
        parse_bound("last tuesday", now)
    with pytest.raises(ValueError, match="before"):
        TimeWindow(10.0, 5.0)
    window = TimeWindow(10.0, 20.0)
    assert [window.contains(t) for t in (9.9, 10.0, 19.9, 20.0, None)] == [False, True, True, False, False]
    assert TimeWindow().contains(None)


def test_bodies_read_objects_and_json_patches() -> None:
    assert bodies.external_ips({"spec": {"externalIPs": ["1.2.3.4", 5]}}) == ["1.2.3.4"]
    assert bodies.external_ips([{"op": "add", "path": "/spec/externalIPs", "value": ["9.9.9.9"]}]) == ["9.9.9.9"]
    assert bodies.external_ips([{"op": "add", "path": "/spec/externalIPs/-", "value": "7.7.7.7"}]) == ["7.7.7.7"]
    assert bodies.external_ips({"spec": {"ports": []}}) == [] and bodies.external_ips("odd") == []
    assert bodies.load_balancer_ips({"status": {"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}, {"hostname": "lb.example"}]}}}) == ["1.1.1.1", "lb.example"]
    assert bodies.load_balancer_ips([{"op": "replace", "path": "/status/loadBalancer/ingress/0", "value": {"ip": "2.2.2.2"}}]) == ["2.2.2.2"]
    binding = {"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [{"kind": "ServiceAccount", "namespace": "ci", "name": "deployer"}]}
    assert bodies.rbac_detail("clusterrolebindings", binding) == "ClusterRole cluster-admin → ServiceAccount ci/deployer"
    role = {"rules": [{"verbs": ["*"], "resources": ["pods"]}, {"verbs": ["bind", "escalate"], "resources": ["roles"]}]}
    assert bodies.rbac_detail("clusterroles", role) == "2 rule(s); wildcard (*); grants bind, escalate"
    assert bodies.rbac_detail("roles", [{"op": "add", "path": "/rules/-"}]) == "JSON patch of /rules/-"
    assert bodies.parse(None) is None
    deep = b"[" * 50_000 + b"]" * 50_000
    assert bodies.parse(deep) is None  # type: ignore[arg-type]

"""The report's aggregation on real events (tests/data/real-audit) and on the suspicious scenario built from them."""

from __future__ import annotations

import shlex
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import pytest

from kube_audit_shipper.model import Alert
from kube_audit_shipper.process.enrich.address import is_public_ip
from kube_audit_shipper.report.aggregate import Aggregator
from kube_audit_shipper.report.intel import IpInfo
from kube_audit_shipper.report.overview import FAILURES, FORBIDDEN, REQUESTS
from kube_audit_shipper.report.window import TimeWindow
from tests.support.corpus import corpus_lines
from tests.unit.report import scenario


def _feed(lines: list[bytes], **kwargs: Any) -> Aggregator:
    a = Aggregator(**kwargs)
    for line in lines:
        a.feed(line)
    a.finish()
    return a


def _final(e: dict[str, Any]) -> bool:
    return e.get("stage") not in ("RequestReceived", "ResponseStarted")


def _code(e: dict[str, Any]) -> int:
    status = e.get("responseStatus")
    return status.get("code", 0) if isinstance(status, dict) else 0


def test_corpus_counts_match_an_independent_count() -> None:
    lines = list(corpus_lines())
    events = [msgspec.json.decode(line) for line in lines]
    a = _feed(lines)
    assert a.lines == len(lines) and a.skipped_total == 0 and a.events == len(lines)
    finals = [e for e in events if _final(e)]
    assert a.requests == len(finals)
    assert a.failures == sum(1 for e in finals if _code(e) >= 400)
    assert a.volume.bytes == sum(map(len, lines))
    assert a.volume.by_verb.total() == len(lines)
    deletions = [e for e in finals if e.get("verb") in ("delete", "deletecollection")]
    assert a.overview.deletions.count == len(deletions) > 0
    secret_reads = [
        e
        for e in finals
        if (e.get("objectRef") or {}).get("resource") == "secrets"
        and e.get("verb") in ("get", "list", "watch")
        and not (e.get("objectRef") or {}).get("subresource")
        and not (e.get("objectRef") or {}).get("apiGroup")
    ]
    assert sum(a.overview.secret_kinds.values()) == len(secret_reads) > 0


def test_corpus_public_addresses_are_the_public_first_source_ips() -> None:
    lines = list(corpus_lines())
    expected: Counter[str] = Counter()
    for line in lines:
        e = msgspec.json.decode(line)
        ips = e.get("sourceIPs")
        if _final(e) and isinstance(ips, list) and ips and is_public_ip(ips[0]):
            expected[ips[0]] += 1
    a = _feed(lines)
    assert {ip: row[REQUESTS] for ip, row in a.overview.public.rows.items()} == dict(expected)
    assert "192.168.99.1" not in a.overview.public  # minikube's host-only network is not the internet


def test_corpus_exec_sessions_carry_every_command_parameter() -> None:
    lines = list(corpus_lines())
    a = _feed(lines)
    sessions = a.overview.sessions.newest_first()
    assert sessions
    shown = {(s.namespace, s.pod, s.command) for s in sessions}
    ids = Counter(msgspec.json.decode(line).get("auditID") for line in lines)
    checked = 0
    # falco's capture: tar with every argument, not only the first (`ka.uri.param[command]` shows `tar`)
    for line in lines:
        e = msgspec.json.decode(line)
        uri = e.get("requestURI", "")
        ref = e.get("objectRef") or {}
        if ref.get("subresource") == "exec" and "command=" in uri and (e.get("auditID") is None or ids[e.get("auditID")] == 1):
            argv = [v for k, v in parse_qsl(uri.partition("?")[2]) if k == "command"]
            assert (ref.get("namespace", ""), ref.get("name", ""), shlex.join(argv)) in shown
            checked += len(argv) > 1
    assert checked >= 3


def test_scenario_shows_what_a_report_is_for() -> None:
    lines = scenario.demo_lines(3000) + scenario.suspicious_lines(scenario.START.replace(hour=10, minute=30))
    a = _feed(lines)
    ov = a.overview
    # one exec session although two stages were recorded; the person behind kubernetes-admin; the whole command
    mine = [s for s in ov.sessions if s.pod == scenario.XSS_POD]
    assert len(mine) == 1
    session = mine[0]
    assert session.actor == "alice" and session.username == "kubernetes-admin"
    assert session.command == " ".join(shlex.quote(part) for part in scenario.XSS_COMMAND)
    assert session.user_agent == scenario.XSS_UA and session.ip == "81.2.69.160" and session.code == 101
    # the failed burst from the public address, with its 403s
    row = ov.public.rows[scenario.ATTACKER_IP]
    assert row[REQUESTS] == scenario.PUBLIC_FAILED + scenario.PUBLIC_OK
    assert row[FAILURES] == row[FORBIDDEN] == scenario.PUBLIC_FAILED
    # the secret read by a person, the anonymous listing across all namespaces
    reads = {(c.actor, c.name, c.detail) for c in ov.secret_reads}
    assert (scenario.XSS_USER, "db-password", "") in reads
    assert ("system:anonymous", "", "all namespaces") in reads
    # the cluster-admin binding, with what it grants
    rbac = [c for c in a.who.rbac if c.name == "mallory-admin"]
    assert len(rbac) == 1 and rbac[0].detail == "ClusterRole cluster-admin → User mallory@example.com"
    # CVE-2020-8554: the external IP and the status write
    details = sorted(c.detail for c in ov.cve)
    assert details == ["spec.externalIPs: 8.8.8.8", "status.loadBalancer.ingress: 1.1.1.1"]
    # the deletion, and per resource type
    assert any(c.resource == "deployments" and c.name == "checkout" for c in ov.deletions)
    assert a.resources.types["deployments"].requests[3] >= 1  # column 3: delete
    # the demo traffic itself: the kinds of users add up to the requests
    assert sum(ov.kinds.values()) == a.requests
    assert ov.kinds["system components"] > ov.kinds["humans"] > 0


def test_user_kinds_follow_the_enrichment_rules() -> None:
    def event(user: dict[str, Any]) -> bytes:
        return msgspec.json.encode({"kind": "Event", "verb": "get", "stage": "ResponseComplete", "user": user, "responseStatus": {"code": 200}})

    a = _feed(
        [
            event({"username": "alice@example.com"}),
            event({"username": "system:serviceaccount:shop:api"}),
            event({"username": "system:node:n1", "groups": ["system:nodes"]}),
            event({"username": "system:kube-scheduler"}),
            event({"username": "eks:addon-manager"}),
            event({"username": "system:anonymous", "groups": ["system:unauthenticated"]}),
            msgspec.json.encode({"kind": "Event", "verb": "get", "user": {}, "responseStatus": {"code": 401}}),
        ]
    )
    assert a.overview.kinds == {"humans": 1, "service accounts": 1, "system components": 3, "anonymous": 1, "unknown": 1}
    assert list(a.who.users.rows) == ["alice@example.com", "system:anonymous", "(unknown)"]
    assert list(a.who.service_accounts.rows) == ["system:serviceaccount:shop:api"]


def test_bad_lines_are_counted_by_reason_and_never_stop_the_report() -> None:
    lines = [*scenario.BAD_LINES, *scenario.demo_lines(50)]
    a = _feed(lines)
    expected = Counter(scenario.BAD_REASONS)
    assert {reason: n for reason, n in a.skipped.items() if n} == dict(expected)
    assert a.events == 50 and a.lines == len(lines)


def test_time_window_keeps_only_events_inside_it() -> None:
    lines = scenario.demo_lines(2000)
    everything = _feed(lines)
    assert everything.first_s is not None and everything.last_s is not None
    middle = (everything.first_s + everything.last_s) / 2
    first_half = _feed(lines, window=TimeWindow(None, middle))
    second_half = _feed(lines, window=TimeWindow(middle, None))
    assert first_half.events + second_half.events == everything.events
    assert first_half.outside == second_half.events and first_half.events > 0 and second_half.events > 0
    assert first_half.last_s is not None and first_half.last_s < middle <= (second_half.first_s or 0)


def test_untimed_events_are_outside_any_bounded_window() -> None:
    lines = [msgspec.json.encode({"kind": "Event", "verb": "get", "auditID": "x"})]
    assert _feed(lines).events == 1
    windowed = _feed(lines, window=TimeWindow(0, None))
    assert windowed.events == 0 and windowed.outside == 1


class _Engine:
    """A detection engine stand-in that raises an alert per exec line and fails on one line (contained)."""

    def __init__(self) -> None:
        self.lines = 0

    def feed(self, line: bytes) -> list[Alert]:
        self.lines += 1
        if b"burst-0003" in line:
            raise RuntimeError("rule crashed")
        if b"/exec" in line:
            return [Alert(rule="exec-into-container", severity="high", time="2026-11-22T10:30:01Z", summary="exec", audit_ids=["exec-0001"])]
        return []

    def finish(self) -> list[Alert]:
        return [Alert(rule="public-access-failures", severity="critical", time="2026-11-22T10:31:00Z", summary="burst", audit_ids=["burst-0000"])]


def test_detection_hits_are_counted_per_rule_and_engine_errors_contained() -> None:
    engine = _Engine()
    lines = scenario.suspicious_lines()
    a = _feed(lines, alerts=engine)
    assert engine.lines == len(lines)
    assert a.detection.errors == 1 and "rule crashed" in a.detection.last_error
    assert {rule: row[0] for rule, row in a.detection.by_rule.rows.items()} == {"exec-into-container": 2, "public-access-failures": 1}
    assert a.detection.severity == {"exec-into-container": "high", "public-access-failures": "critical"}


class _Intel:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def lookup(self, address: str) -> IpInfo | None:
        self.asked.append(address)
        if address == scenario.ATTACKER_IP:
            return IpInfo(country="ZZ", asn=64500, as_org="Example Hosting", risky=True, risk_source="drop.txt")
        raise ValueError("database cannot answer")


def test_ip_intelligence_is_asked_for_public_addresses_only_and_failures_are_contained() -> None:
    intel = _Intel()
    a = _feed(scenario.suspicious_lines(), intel=intel)
    assert sorted(intel.asked) == sorted(a.overview.public.rows)
    assert all(is_public_ip(ip) for ip in intel.asked)
    assert a.ip_info == {scenario.ATTACKER_IP: IpInfo(country="ZZ", asn=64500, as_org="Example Hosting", risky=True, risk_source="drop.txt")}


@pytest.mark.parametrize("distinct", [30_000])
def test_tables_stay_bounded_and_a_late_heavy_hitter_is_still_found(distinct: int) -> None:
    a = Aggregator()
    for i in range(distinct):  # one request each from many public addresses, with as many user agents and users
        a.feed(
            msgspec.json.encode(
                {
                    "kind": "Event",
                    "verb": "get",
                    "stage": "ResponseComplete",
                    "user": {"username": f"user-{i}@example.com"},
                    "sourceIPs": [f"8.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"],
                    "userAgent": f"agent/{i}",
                    "responseStatus": {"code": 200},
                }
            )
        )
    late = msgspec.json.encode(
        {
            "kind": "Event",
            "verb": "list",
            "stage": "ResponseComplete",
            "user": {"username": "system:anonymous"},
            "sourceIPs": ["45.95.147.99"],
            "responseStatus": {"code": 403},
        }
    )
    for _ in range(50):
        a.feed(late)
    a.finish()
    for table in (a.overview.public, a.who.users, a.who.user_agents, a.who.source_ips, a.volume.by_user):
        assert len(table) <= table.cap
        assert table.folded > 0
    assert a.overview.public.total(REQUESTS) == distinct + 50  # totals stay exact
    assert a.overview.public.top(1)[0][0] == "45.95.147.99"
    assert a.overview.public.rows["45.95.147.99"][FAILURES] == 50

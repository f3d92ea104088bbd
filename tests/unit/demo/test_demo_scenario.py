"""The demo's audit log: exactly N lines, the suspicious actions among them as kube-apiserver records them, and
the built-in rules raising exactly the alerts the demo promises (run through the real detection engine)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from datetime import datetime
from itertools import pairwise
from urllib.parse import parse_qsl, urlsplit

import pytest

from kube_audit_shipper.commands import detect
from kube_audit_shipper.demo.incidents import SCANNER_IP
from kube_audit_shipper.demo.scenario import DEMO_MIX, Scenario
from kube_audit_shipper.model import Alert


def _alerts(lines: list[bytes]) -> list[Alert]:
    engine, _ = detect.load_engine(argparse.Namespace(config=None, rules=[], no_builtin=False))
    return [alert for line in lines for alert in engine.evaluate_line(line)]


def _time(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def demo() -> tuple[Scenario, list[tuple[str, bytes]]]:
    scenario = Scenario(1, 3000)
    return scenario, list(scenario.records())


def test_exactly_the_events_asked_for_with_unique_ids_and_the_same_bytes_for_the_same_seed(demo: tuple[Scenario, list[tuple[str, bytes]]]) -> None:
    scenario, records = demo
    assert len(records) == 3000 and len({audit_id for audit_id, _ in records}) == 3000
    assert [json.loads(line)["auditID"] for _, line in records] == [audit_id for audit_id, _ in records]
    assert list(Scenario(1, 3000).lines()) == [line for _, line in records]
    assert list(Scenario(2, 3000).lines()) != [line for _, line in records]
    for n in (0, 1, 16, 17, 18, 100, 333):
        assert sum(1 for _ in Scenario(1, n).lines()) == n


def test_the_incidents_are_written_in_order_spread_over_the_log(demo: tuple[Scenario, list[tuple[str, bytes]]]) -> None:
    scenario, records = demo
    position = {audit_id: i for i, (audit_id, _) in enumerate(records)}
    firsts = [position[scenario.audit_ids[incident.title][0]] for incident in scenario.incidents]
    assert len(scenario.incidents) == 4 and firsts == sorted(firsts)
    assert firsts[0] > 0.1 * 3000 and firsts[-1] < 0.9 * 3000
    assert [len(scenario.audit_ids[i.title]) for i in scenario.incidents] == [len(i.requests) for i in scenario.incidents]
    scan = [position[a] for a in scenario.audit_ids[scenario.incidents[2].title]]
    assert all(b - a > 1 for a, b in pairwise(scan))  # background traffic between the scanner's requests


def test_timestamps_keep_increasing_through_the_incidents(demo: tuple[Scenario, list[tuple[str, bytes]]]) -> None:
    _, records = demo
    stamps = [_time(json.loads(line)["stageTimestamp"]) for _, line in records]
    assert all(a < b for a, b in pairwise(stamps))
    span = (stamps[-1] - stamps[0]).total_seconds()
    assert 0.5 * 3000 / DEMO_MIX.events_per_second < span < 2 * 3000 / DEMO_MIX.events_per_second


def test_the_incidents_look_like_what_kube_apiserver_writes(demo: tuple[Scenario, list[tuple[str, bytes]]]) -> None:
    scenario, records = demo
    by_id = {audit_id: json.loads(line) for audit_id, line in records}
    exec_event, secret_event = (by_id[scenario.audit_ids[i.title][0]] for i in scenario.incidents[:2])
    uri = urlsplit(exec_event["requestURI"])
    query = parse_qsl(uri.query)
    assert uri.path == f"/api/v1/namespaces/checkout/pods/{exec_event['objectRef']['name']}/exec"
    assert [v for k, v in query if k == "command"] == ["sh", "-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/token; env | grep -i pass; exec sh"]
    assert "+" in uri.query and "%2F" in uri.query  # Go's url.Values.Encode, as kubectl sends it
    assert [k for k, _ in query] == sorted(k for k, _ in query)
    assert (exec_event["stage"], exec_event["verb"], exec_event["responseStatus"], exec_event["level"]) == (
        "ResponseStarted",
        "get",
        {"metadata": {}, "code": 101},
        "Request",
    )
    assert exec_event["user"]["username"] == "alice@example.com" and exec_event["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert secret_event["requestURI"] == "/api/v1/namespaces/payments/secrets/payments-worker-credentials" and secret_event["verb"] == "get"
    assert "requestObject" not in secret_event and "responseObject" not in secret_event
    scan = [by_id[a] for a in scenario.audit_ids[scenario.incidents[2].title]]
    assert {e["sourceIPs"][0] for e in scan} == {SCANNER_IP} and {e["user"]["username"] for e in scan} == {"system:anonymous"}
    refused = [e for e in scan if e["responseStatus"]["code"] == 403]
    assert len(refused) == 12 and all(e["annotations"] == {"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""} for e in refused)
    assert all(e["responseStatus"]["reason"] == "Forbidden" and 'User "system:anonymous" cannot' in e["responseStatus"]["message"] for e in refused)
    assert (_time(scan[-1]["stageTimestamp"]) - _time(scan[0]["stageTimestamp"])).total_seconds() < 60
    binding = by_id[scenario.audit_ids[scenario.incidents[3].title][0]]
    assert binding["requestURI"] == "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings?fieldManager=kubectl-create&fieldValidation=Strict"
    assert binding["requestObject"]["roleRef"]["name"] == "cluster-admin" and binding["responseStatus"]["code"] == 201


def test_the_built_in_rules_raise_the_incidents_alerts_and_nothing_else(demo: tuple[Scenario, list[tuple[str, bytes]]]) -> None:
    scenario, records = demo
    alerts = _alerts([line for _, line in records])
    assert Counter(a.rule for a in alerts) == Counter(rule for incident in scenario.incidents for rule in incident.rules)
    for incident in scenario.incidents:
        ids = set(scenario.audit_ids[incident.title])
        assert {a.rule for a in alerts if ids.intersection(a.audit_ids)} == set(incident.rules), incident.title
    scan = next(a for a in alerts if a.rule == "public-access-failures")
    assert scan.fields["ip"] == SCANNER_IP and scan.fields["requests"] >= 10 and scan.fields["failure_rate"] > 0.5


@pytest.mark.parametrize("events", [17, 200])
def test_short_logs_keep_the_incidents_while_they_fit(events: int) -> None:
    scenario = Scenario(3, events)
    assert len(scenario.incidents) == 4
    alerts = _alerts(list(scenario.lines()))
    assert {a.rule for a in alerts} == {rule for incident in scenario.incidents for rule in incident.rules}


def test_a_log_too_short_for_the_incidents_has_none() -> None:
    scenario = Scenario(1, 16)
    assert scenario.required == 17 and scenario.incidents == [] and scenario.audit_ids == {}
    assert _alerts(list(scenario.lines())) == []
    with pytest.raises(ValueError):
        Scenario(1, -1)

"""AuditEventGenerator: determinism, apiserver-like shape, level/body consistency, the traffic mix."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from kube_audit_shipper.demo.events import DEFAULT_START_TIME, AuditEventGenerator, EventMix

N = 20_000
ORDER = [
    "kind",
    "apiVersion",
    "level",
    "auditID",
    "stage",
    "requestURI",
    "verb",
    "user",
    "impersonatedUser",
    "sourceIPs",
    "userAgent",
    "objectRef",
    "responseStatus",
    "requestObject",
    "responseObject",
    "requestReceivedTimestamp",
    "stageTimestamp",
    "annotations",
]
ALWAYS = {
    "kind",
    "apiVersion",
    "level",
    "auditID",
    "stage",
    "requestURI",
    "verb",
    "user",
    "sourceIPs",
    "userAgent",
    "responseStatus",
    "requestReceivedTimestamp",
    "stageTimestamp",
}
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
MICRO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
BODY_VERBS = {"create", "update", "patch", "delete"}


def _parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def sample() -> list[tuple[bytes, dict]]:
    return [(line, json.loads(line)) for line in AuditEventGenerator(11).lines(N)]


def test_same_seed_gives_identical_bytes_and_other_seeds_differ() -> None:
    a, b = AuditEventGenerator(7), AuditEventGenerator(7)
    assert list(a.lines(3000)) == list(b.lines(3000))
    assert list(AuditEventGenerator(7).lines(50)) != list(AuditEventGenerator(8).lines(50))


def test_event_line_and_records_agree() -> None:
    a, b, c = AuditEventGenerator(3), AuditEventGenerator(3), AuditEventGenerator(3)
    for _ in range(200):
        audit_id, line = next(c.records(1))
        assert a.event() == json.loads(b.line()) == json.loads(line)
        assert json.loads(line)["auditID"] == audit_id


def test_audit_ids_are_unique_uuid4(sample: list[tuple[bytes, dict]]) -> None:
    ids = [ev["auditID"] for _, ev in sample]
    assert len(set(ids)) == len(ids)
    assert all(UUID4.fullmatch(i) for i in ids)


def test_lines_are_compact_json_with_apiserver_fields_in_order(sample: list[tuple[bytes, dict]]) -> None:
    for line, ev in sample:
        assert b"\n" not in line and not line.startswith(b" ")
        assert ev.keys() >= ALWAYS, line[:300]
        assert [k for k in ORDER if k in ev] == list(ev), "fields not in apiserver order"
        assert ev["kind"] == "Event" and ev["apiVersion"] == "audit.k8s.io/v1" and "metadata" not in ev
        assert MICRO.fullmatch(ev["requestReceivedTimestamp"]) and MICRO.fullmatch(ev["stageTimestamp"])
        assert ev["stage"] in ("ResponseComplete", "ResponseStarted")
        if "objectRef" in ev:  # resource request
            ref = ev["objectRef"]
            assert ev["requestURI"].startswith("/apis/" + ref["apiGroup"] if "apiGroup" in ref else "/api/v1/")
        else:  # non-resource: health probes and discovery
            assert ev["requestURI"].startswith(("/readyz", "/livez", "/apis/"))
        assert isinstance(ev["responseStatus"]["code"], int)
        if ev["responseStatus"]["code"] != 429:
            assert ev["annotations"]["authorization.k8s.io/decision"] in ("allow", "forbid")


def test_timestamps_start_at_start_time_and_advance(sample: list[tuple[bytes, dict]]) -> None:
    stages = [_parse(ev["stageTimestamp"]) for _, ev in sample]
    assert all(x < y for x, y in pairwise(stages)), "stageTimestamp must strictly increase"
    assert DEFAULT_START_TIME <= stages[0] < DEFAULT_START_TIME + timedelta(seconds=1)
    for _, ev in sample:
        assert DEFAULT_START_TIME <= _parse(ev["requestReceivedTimestamp"]) <= _parse(ev["stageTimestamp"])
    start = datetime(2030, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    first = AuditEventGenerator(1, start_time=start).event()
    assert start <= _parse(first["stageTimestamp"]) < start + timedelta(seconds=1)
    with pytest.raises(ValueError):
        AuditEventGenerator(1, start_time=datetime(2030, 1, 1))


def test_level_and_bodies_are_consistent(sample: list[tuple[bytes, dict]]) -> None:
    for line, ev in sample:
        level, verb, code = ev["level"], ev["verb"], ev["responseStatus"]["code"]
        if level == "Metadata":
            assert "requestObject" not in ev and "responseObject" not in ev
        elif level == "Request":
            assert "responseObject" not in ev
            if "requestObject" in ev:
                assert verb in BODY_VERBS
            elif verb in BODY_VERBS and code < 400 and ev["objectRef"].get("subresource") not in ("exec", "attach", "portforward"):
                pytest.fail(f"Request-level {verb} without its body: {line[:300]!r}")
        else:
            assert level == "RequestResponse"
            assert ("responseObject" in ev) == (code != 429), line[:300]
            assert ("requestObject" not in ev) or verb in BODY_VERBS


def test_mix_proportions_match_a_control_plane(sample: list[tuple[bytes, dict]]) -> None:
    events = [ev for _, ev in sample]
    levels = Counter(ev["level"] for ev in events)
    share = {k: v / N for k, v in levels.items()}
    assert 0.80 <= share["Metadata"] <= 0.86
    assert 0.11 <= share["Request"] <= 0.17
    assert 0.02 <= share["RequestResponse"] <= 0.04
    connect = [ev for ev in events if ev.get("objectRef", {}).get("subresource") in ("exec", "attach", "portforward")]
    assert 0.002 <= len(connect) / N <= 0.009
    codes = Counter(ev["responseStatus"]["code"] for ev in events)
    assert {403, 404, 409, 429} <= codes.keys()
    assert 0.01 <= sum(codes[c] for c in (403, 404, 409, 429)) / N <= 0.03
    watches = [ev for ev in events if ev["verb"] == "watch"]
    assert {"ResponseStarted", "ResponseComplete"} <= {ev["stage"] for ev in watches}
    assert sum(ev["requestURI"].startswith("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/") for ev in events) > 0.2 * N
    users = Counter(ev["user"].get("username", "").split(":")[1] if ev["user"].get("username", "").startswith("system:") else "other" for ev in events)
    assert users["node"] > users["serviceaccount"] > users["other"] > 0
    assert all(ev["user"]["groups"] == ["system:nodes", "system:authenticated"] for ev in events if ev["user"]["username"].startswith("system:node:"))
    assert 0 < sum("impersonatedUser" in ev for ev in events) < 0.01 * N
    first_ips = [ev["sourceIPs"][0] for ev in events]
    private = sum(ip.startswith(("10.", "172.16.", "192.168.")) for ip in first_ips)
    assert 0.97 <= private / N < 1
    assert any(ev["userAgent"].startswith("kubectl/v1.31.0") for ev in events)
    assert any(ev["userAgent"].startswith("kube-controller-manager/v1.31.0") for ev in events)
    bodies = [ev["requestObject"] for ev in events if "requestObject" in ev]
    secrets = [b for b in bodies if isinstance(b, dict) and b.get("kind") == "Secret"]
    assert secrets and all(b["data"] for b in secrets)
    assert any(isinstance(b, list) for b in bodies)  # a json-patch document


def _objects_with_metadata(obj: dict) -> list[dict]:
    if obj["kind"].endswith("List"):
        return [item["metadata"] for item in obj["items"]]
    if obj["kind"] == "Table":
        return [row["object"]["metadata"] for row in obj["rows"]]
    return [obj["metadata"]]


def test_request_response_objects_carry_managed_fields(sample: list[tuple[bytes, dict]]) -> None:
    rr = [(line, ev) for line, ev in sample if ev["level"] == "RequestResponse" and "responseObject" in ev]
    kinds = Counter(ev["responseObject"]["kind"] for _, ev in rr)
    assert kinds["PodList"] and kinds["Table"] and kinds["Pod"] and kinds["Deployment"]
    for _, ev in rr:
        if ev["responseObject"]["kind"] == "Status":
            continue
        for meta in _objects_with_metadata(ev["responseObject"]):
            entries = meta["managedFields"]
            assert len(entries) >= 2
            assert all(e["fieldsType"] == "FieldsV1" and e["fieldsV1"] and e["manager"] for e in entries)
    mean = sum(len(line) for line, _ in rr) / len(rr)
    assert 10_000 <= mean <= 80_000, mean


def test_exec_events_look_like_kubectl_exec(sample: list[tuple[bytes, dict]]) -> None:
    execs = [ev for _, ev in sample if ev.get("objectRef", {}).get("subresource") == "exec"]
    assert execs
    for ev in execs:
        assert ev["verb"] in ("create", "get") and ev["responseStatus"]["code"] == 101
        assert re.fullmatch(r"/api/v1/namespaces/[^/]+/pods/[^/]+/exec\?command=[^&]+(&command=[^&]+)*&container=.+", ev["requestURI"])
        assert ev["annotations"]["authorization.k8s.io/decision"] == "allow"
        assert ev["annotations"]["authorization.k8s.io/reason"].startswith("RBAC: allowed by ")
    assert any(
        "command=sh&command=-c&command=ls&container=" in ev["requestURI"] and ev["requestURI"].endswith("stdin=true&stdout=true&tty=true") for ev in execs
    )


def test_failures_carry_the_status_the_apiserver_returns(sample: list[tuple[bytes, dict]]) -> None:
    for _, ev in sample:
        code, status = ev["responseStatus"]["code"], ev["responseStatus"]
        if code == 403:
            assert status["reason"] == "Forbidden" and status["status"] == "Failure"
            assert "forbidden" in status["message"]
            assert ev["annotations"]["authorization.k8s.io/decision"] == "forbid"
            assert "requestObject" not in ev
        elif code in (404, 409):
            assert status["reason"] in ("NotFound", "AlreadyExists", "Conflict")
        elif code == 429:
            assert status == {"metadata": {}, "code": 429} and "annotations" not in ev
        if code >= 400 and ev["level"] == "RequestResponse" and code != 429:
            assert ev["responseObject"]["kind"] == "Status"


def test_big_events_are_optional_and_sized() -> None:
    mix = EventMix(big_event_probability=1.0, big_event_bytes=300_000)
    lines = list(AuditEventGenerator(5, mix=mix).lines(8))
    for line in lines:
        ev = json.loads(line)
        assert 270_000 <= len(line) <= 420_000, len(line)
        assert ev["level"] in ("Request", "RequestResponse")
    assert {json.loads(line)["level"] for line in lines} == {"Request", "RequestResponse"}
    assert max(len(line) for line in AuditEventGenerator(5).lines(3000)) < 1_000_000


def test_write_bytes_stops_once_the_target_is_reached() -> None:
    lines = list(AuditEventGenerator(2).write_bytes(1_000_000))
    total = sum(len(line) + 1 for line in lines)
    assert total >= 1_000_000 and total - len(lines[-1]) - 1 < 1_000_000


def test_event_mix_is_validated_and_weights_apply() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        EventMix(failure_rate=1.5)
    with pytest.raises(ValueError):
        EventMix(metadata=0, request=0, request_response=0, connect=0)
    with pytest.raises(ValueError, match="events_per_second"):
        EventMix(events_per_second=0)
    only_meta = EventMix(request=0, request_response=0, connect=0, failure_rate=0)
    events = [json.loads(line) for line in AuditEventGenerator(1, mix=only_meta).lines(2000)]
    assert {ev["level"] for ev in events} == {"Metadata"}
    assert {ev["responseStatus"]["code"] for ev in events} <= {200, 201}
    span = _parse(events[-1]["stageTimestamp"]) - _parse(events[0]["stageTimestamp"])
    assert timedelta(seconds=6) < span < timedelta(seconds=10)  # 2000 events at 250/s

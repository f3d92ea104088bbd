"""The whole agent over a log holding the issue's poison lines between good ones (issue 13, item 1).

Before: the first such line raised out of the reader, the agent exited with a traceback, the good events of the
same chunk were lost, and every restart crashed on the same line again. Now every line that is a JSON object
reaches every sink (a file sink and the test Loki), a line that is not is dead-lettered, and a restart finds
nothing left to do.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from kube_audit_shipper.config import Config, parse
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.jsonscan import object_members
from kube_audit_shipper.process.enrich.redact import WITHHELD_KEY
from kube_audit_shipper.process.policy.event import BODY_NOTE_ANNOTATION
from tests.support.corpus import numbered_lines
from tests.support.harness import append, run_once, sink_lines
from tests.support.loki_server import LokiServer, recent_corpus

DEEP = 5000  # past Python's recursion limit, which msgspec's nesting depth follows
SECRET = "c3VwZXItc2VjcmV0LXBhc3N3b3Jk"
POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitManagedFields: true
rules:
  - level: RequestResponse
"""


def config(tmp: Path, loki_url: str) -> Config:
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY)
    return parse(
        {
            "state_dir": str(tmp / "state"),
            "node_name": "cp-test",
            "input": {"paths": [str(tmp / "log" / "audit.log")], "poll_interval_ms": 50, "rescan_interval_ms": 200, "max_line_bytes": 4 << 20},
            "policy": {"file": str(policy)},
            "enrich": {"static_fields": {"cluster_id": "c0123"}},  # redaction and derived fields: on by default
            "batch": {"max_events": 64, "max_bytes": 4 << 20, "max_wait_ms": 50},
            "sinks": [
                {"name": "archive", "type": "file", "path": str(tmp / "out")},
                {"name": "loki", "type": "loki", "url": loki_url, "label_fields": ["verb", "resource", "code"], "retry": {"initial_ms": 1, "max_ms": 50}},
            ],
            "checkpoint": {"flush_interval_ms": 50},
            "metrics": {"listen": None},
        }
    )


def poison_lines(template: bytes) -> list[bytes]:
    """The issue's lines, built on a real event (recent timestamps, so that Loki takes them)."""
    event = msgspec.json.decode(template)
    stamp = event["stageTimestamp"]

    def variant(audit_id: str, **fields: Any) -> bytes:
        return msgspec.json.encode({**event, "level": "RequestResponse", "auditID": audit_id, **fields})

    def with_raw(line: bytes, name: str, raw: bytes) -> bytes:
        return line[:-1] + b',"' + name.encode() + b'":' + raw + b"}"

    secret_ref = {"resource": "secrets", "namespace": "default", "name": "db", "apiVersion": "v1"}
    deep_objects = b'{"a":' * DEEP + b"1" + b"}" * DEEP
    deep_arrays = b"[" * DEEP + b"]" * DEEP
    return [
        with_raw(variant("poison-deep-request"), "requestObject", deep_objects),
        with_raw(variant("poison-deep-response"), "responseObject", deep_arrays),
        with_raw(variant("poison-deep-unknown"), "x-extension", deep_arrays),
        with_raw(
            variant("poison-deep-secret", objectRef=secret_ref, verb="create"),
            "requestObject",
            b'{"kind":"Secret","data":{"password":"' + SECRET.encode() + b'"},"spec":' + deep_arrays + b"}",
        ),
        variant("poison-code", responseStatus={"code": 200}).replace(b'"code":200', b'"code":1e400'),
        variant("poison-stage", requestReceivedTimestamp=stamp, stageTimestamp=stamp[:17] + "9e9999999Z"),
        variant("poison-offset", requestReceivedTimestamp=stamp, stageTimestamp=stamp[:-1] + "+99:99"),
    ]


def audit_id(record: bytes | str) -> str:
    members = object_members(record.encode() if isinstance(record, str) else record)
    assert members is not None
    return str(msgspec.json.decode(members["auditID"]))


def dead_letters(tmp: Path) -> list[dict[str, Any]]:
    store = DeadLetterStore(tmp / "state", max_bytes=1 << 30, max_event_bytes=16 << 20)
    try:
        return list(store.iter_records())
    finally:
        store.close()


def test_poison_lines_reach_every_sink_and_never_stop_the_agent(loki_server: LokiServer, tmp_path: Path) -> None:
    good = recent_corpus(numbered_lines(240, prefix="good"))
    poison = poison_lines(good[0])
    not_json = [b'{"kind":"Event","auditID":"not-json","requestObject":' + b"[" * DEEP + b"}" * DEEP + b"}", b"[" * DEEP + b"]" * DEEP]
    lines: list[bytes] = []
    for k, line in enumerate(good):  # a poison line every 20 good ones, so each chunk holds good and bad lines
        lines.append(line)
        if k % 20 == 10:  # each one unique: Loki drops exact duplicates silently
            bad = (poison + not_json)[(k // 20) % (len(poison) + len(not_json))]
            lines.append(bad.replace(b'"auditID":"poison-', b'"auditID":"early-%d-' % k, 1))
    lines += poison + not_json
    append(tmp_path / "log" / "audit.log", lines)
    cfg = config(tmp_path, loki_server.url)

    agent = run_once(cfg)

    expected = Counter(audit_id(line) for line in lines if line not in not_json)
    assert len(expected) == len(lines) - lines.count(not_json[0]) - lines.count(not_json[1])  # each auditID once
    archived = sink_lines(tmp_path / "out")
    assert Counter(audit_id(r) for r in archived) == expected  # every event, once, in the file sink
    assert Counter(audit_id(r) for r in loki_server.lines()) == expected  # and in Loki
    state = agent.metrics_state()
    assert state.shipped["archive"][0] == state.shipped["loki"][0] == sum(expected.values())
    assert state.deadlettered == {"malformed": lines.count(not_json[0]) + lines.count(not_json[1])}
    letters = dead_letters(tmp_path)
    assert sorted(r["event"].encode() for r in letters) == sorted(line for line in lines if line in not_json)
    for letter in letters:
        assert letter["sink"] is None
        assert letter["reason"].startswith("invalid JSON: JSON is malformed: mismatched bracket") or letter["reason"] == "not a JSON object"

    by_id = {audit_id(r): r for r in archived}
    # a deep body ships as recorded; the deep Secret is withheld, with the reason on the event
    assert b"[" * DEEP + b"]" * DEEP in by_id["poison-deep-response"]
    assert SECRET.encode() not in b"".join(archived) and SECRET not in "".join(loki_server.lines())
    secret = json.loads(by_id["poison-deep-secret"])
    assert WITHHELD_KEY in secret["requestObject"] and secret["annotations"][BODY_NOTE_ANNOTATION].startswith("requestObject: replaced by a marker")
    # what enrichment could not compute is left out, the rest is there
    for name in ("poison-stage", "poison-offset"):
        derived = json.loads(by_id[name])["derived"]
        assert "latency_ms" not in derived and derived["user_kind"]
    assert "outcome" not in json.loads(by_id["poison-code"].replace(b"1e400", b"0"))["derived"]

    # a restart finds nothing left: no crash, nothing shipped or dead-lettered twice
    again = run_once(cfg)
    assert again.metrics_state().shipped["archive"][0] == 0
    assert len(sink_lines(tmp_path / "out")) == len(archived) and len(dead_letters(tmp_path)) == len(letters)

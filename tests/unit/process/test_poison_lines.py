"""No line can blind the agent (issue 13, item 1): the issue's poison lines through the real per-line path.

Every test goes through `LineProcessor.process` with the real reader and the transform the agent builds from a
policy with omitManagedFields, with redaction and enrichment on. An event that is valid JSON is shipped
(or dropped by the policy), whatever its nesting or values; anything else is contained to its line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.jsonscan import check_object, object_members
from kube_audit_shipper.model import Chunk, Lines
from kube_audit_shipper.process.enrich.config import EnrichConfig, RedactConfig
from kube_audit_shipper.process.enrich.redact import WITHHELD_KEY
from kube_audit_shipper.process.lines import MAX_REASON_CHARS
from kube_audit_shipper.process.policy.event import BODY_NOTE_ANNOTATION, NOTES_FIELD, decode_event
from kube_audit_shipper.process.policy.load import parse_policy
from kube_audit_shipper.process.policy.match import compile_policy
from kube_audit_shipper.process.transform import Transform, build_transform
from kube_audit_shipper.source.reader import LineReader
from tests.support.corpus import numbered_lines
from tests.support.line_processing import ProcessingWithDeadLetters as LineProcessor

MiB = 1 << 20
DEEP = 5000  # far past Python's recursion limit (1000), which msgspec's nesting depth follows
POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitManagedFields: true
rules:
  - level: None
    verbs: [watch]
  - level: Metadata
    resources: [{group: "", resources: [events]}]
  - level: RequestResponse
"""
SECRET_DATA = "c3VwZXItc2VjcmV0LXBhc3N3b3Jk"  # base64 of the value redaction must never let through


def make_transform(**enrich: Any) -> Transform:
    parsed, _ = parse_policy(POLICY)
    transform = build_transform(compile_policy(parsed), EnrichConfig(static_fields={"cluster_id": "c1"}, **enrich), node_name="node-1")
    assert transform is not None
    return transform


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": "poison",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/default/configmaps",
        "verb": "create",
        "user": {"username": "alice", "groups": ["dev"]},
        "sourceIPs": ["203.0.113.7"],
        "userAgent": "kubectl/v1.30",
        "objectRef": {"resource": "configmaps", "namespace": "default", "name": "cm", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 201},
        "requestReceivedTimestamp": "2024-05-01T10:00:00.000000Z",
        "stageTimestamp": "2024-05-01T10:00:00.250000Z",
    }
    base.update(fields)
    return base


def line_of(fields: dict[str, Any], **raw: bytes) -> bytes:
    """The event as one JSON line; `raw` members are spliced in as given (deep JSON is built as bytes)."""
    line = msgspec.json.encode(fields)
    for name, value in raw.items():
        line = line[:-1] + b',"' + name.encode() + b'":' + value + b"}"
    return line


def nested_objects(depth: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * depth + leaf + b"}" * depth


def nested_arrays(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def read_lines(tmp_path: Path, lines: list[bytes]) -> Lines:
    path = tmp_path / "audit.log"
    content = b"".join(line + b"\n" for line in lines)
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    try:
        return LineReader(fd, offset=0, gz=False, chunk_bytes=len(content) + 1, max_line_bytes=16 * MiB).read()
    finally:
        os.close(fd)


def run(tmp_path: Path, lines: list[bytes], transform: Any = None) -> tuple[Chunk, list[dict[str, Any]], dict[str, int]]:
    dl = DeadLetterStore(tmp_path / "state", max_bytes=64 * MiB, max_event_bytes=16 * MiB)
    processor = LineProcessor(make_transform() if transform is None else transform, dl)
    chunk = processor.process(1, str(tmp_path / "audit.log"), read_lines(tmp_path, lines))
    dead = list(dl.iter_records())
    dl.close()
    return chunk, dead, processor.counts()


def good_lines(n: int, start: int = 0) -> list[bytes]:
    return numbered_lines(n, start=start, prefix="good")


def audit_ids(records: list[bytes]) -> list[str]:
    return [top_level(r)["auditID"] for r in records]


def top_level(record: bytes) -> dict[str, Any]:
    """The record's members decoded, except those msgspec cannot decode (too deep, a number out of range): raw bytes."""
    members = object_members(record)
    assert members is not None
    out: dict[str, Any] = {}
    for key, raw in members.items():
        try:
            out[key] = msgspec.json.decode(raw)
        except (RecursionError, msgspec.ValidationError):
            out[key] = bytes(raw)
    return out


# -- the lines of the issue: each used to raise out of process() and lose its chunk -------------------------

POISON = {  # the auditID of each is "p-" + the first word of its name
    "deep requestObject": line_of(event(auditID="p-deep"), requestObject=nested_objects(DEEP)),
    "deep-response responseObject": line_of(event(auditID="p-deep-response"), responseObject=nested_arrays(DEEP)),
    "deep-unknown field": line_of(event(auditID="p-deep-unknown"), extension=nested_arrays(DEEP)),
    "deep-user user.extra": line_of(event(auditID="p-deep-user")).replace(
        b'"user":{"username":"alice","groups":["dev"]}', b'"user":{"username":"alice","extra":{"x":' + nested_arrays(DEEP, b'"y"') + b"}}"
    ),
    "deep-annotation annotations": line_of(event(auditID="p-deep-annotation"), annotations=b'{"a":' + nested_objects(DEEP) + b"}"),
    "code responseStatus.code=1e400": line_of(event(auditID="p-code")).replace(b'"code":201', b'"code":1e400'),
    "stage stageTimestamp=…:9e9999999Z": line_of(event(auditID="p-stage", stageTimestamp="2024-05-01T10:00:9e9999999Z")),
    "offset stageTimestamp=…+99:99": line_of(event(auditID="p-offset", stageTimestamp="2024-05-01T10:00:00.250000+99:99")),
}


@pytest.mark.parametrize("name", list(POISON))
def test_a_poison_line_is_shipped_and_its_chunk_with_it(tmp_path: Path, name: str) -> None:
    poison = POISON[name]
    before, after = good_lines(3), good_lines(3, start=3)
    chunk, dead, counts = run(tmp_path, [*before, poison, *after])
    assert dead == [] and not any(k.startswith("deadletter:") for k in counts)
    assert audit_ids(chunk.records) == [*(f"good-{i:09d}" for i in range(3)), "p-" + name.split()[0], *(f"good-{i:09d}" for i in range(3, 6))]
    shipped, recorded = top_level(chunk.records[3]), top_level(poison)
    # the event as recorded (policy level RequestResponse: nothing trimmed), enrichment appended
    assert {k: v for k, v in shipped.items() if k not in ("cluster_id", "node", "derived")} == recorded
    assert shipped["node"] == "node-1" and shipped["cluster_id"] == "c1"
    assert shipped["derived"]["effective_user"] == "alice" and shipped["derived"]["source_ip"] == "203.0.113.7"


def test_deep_bodies_are_shipped_as_recorded_byte_for_byte(tmp_path: Path) -> None:
    body = nested_objects(DEEP, b'{"kind":"ConfigMap","data":{"k":"v"}}')
    line = line_of(event(auditID="p-body"), requestObject=body, responseObject=nested_arrays(DEEP))
    chunk, dead, _ = run(tmp_path, [line])
    assert dead == []
    (record,) = chunk.records
    # not re-encoded: the input line itself with the enrichment members appended
    assert record.startswith(line[:-1] + b",") and b'"requestObject":' + body in record


def test_a_deep_event_keeps_its_policy_decision(tmp_path: Path) -> None:
    deep = nested_objects(DEEP)
    watch = line_of(event(auditID="p-watch", verb="watch"), requestObject=deep)  # level None: dropped
    events = line_of(
        event(auditID="p-events", objectRef={"resource": "events", "namespace": "d", "name": "e", "apiVersion": "v1"}),
        requestObject=deep,
        responseObject=deep,
    )  # Metadata: bodies removed
    chunk, dead, counts = run(tmp_path, [watch, events])
    assert dead == [] and counts["dropped"] == 1
    (record,) = chunk.records
    shipped = json.loads(record)  # shallow now: the bodies are gone
    assert shipped["auditID"] == "p-events" and shipped["level"] == "Metadata"
    assert "requestObject" not in shipped and "responseObject" not in shipped


def test_managed_fields_are_removed_from_a_body_nested_deeper_than_msgspec_goes(tmp_path: Path) -> None:
    managed = b'[{"manager":"kubectl","operation":"Update","fieldsV1":' + nested_objects(DEEP, b"{}") + b"}]"
    body = b'{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm","managedFields":' + managed + b'},"spec":' + nested_arrays(DEEP) + b"}"
    listed = b'{"kind":"ConfigMapList","items":[' + body + b"," + body + b"]}"
    line = line_of(event(auditID="p-managed"), requestObject=body, responseObject=listed)
    chunk, dead, _ = run(tmp_path, [line])
    assert dead == []
    shipped = top_level(chunk.records[0])
    for raw in (shipped["requestObject"], shipped["responseObject"]):
        assert isinstance(raw, bytes) and b"managedFields" not in raw  # still deep (spec), and stripped
    assert shipped["requestObject"] == b'{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm"},"spec":' + nested_arrays(DEEP) + b"}"
    assert BODY_NOTE_ANNOTATION not in shipped.get("annotations", {})


def test_a_body_that_cannot_be_stripped_ships_as_recorded_and_says_why(tmp_path: Path) -> None:
    # Tables nested in Tables: stripping follows rows[*].object into each, deeper than Python recurses.
    inner = b'{"kind":"ConfigMap","metadata":{"name":"x","managedFields":[{"manager":"m"}]}}'
    body = inner
    for _ in range(600):
        body = b'{"kind":"Table","rows":[{"object":' + body + b"}]}"
    line = line_of(event(auditID="p-tables", annotations={"existing": "kept"}), responseObject=body)
    chunk, dead, _ = run(tmp_path, [line])
    assert dead == []
    shipped = top_level(chunk.records[0])
    assert shipped["responseObject"] == body  # as recorded, managedFields included
    annotations = shipped["annotations"]
    assert annotations["existing"] == "kept"
    note = annotations[BODY_NOTE_ANNOTATION]
    assert note.startswith("responseObject: managedFields not removed, shipped as recorded") and "RecursionError" in note


def secret_line(body: bytes, *, auditID: str = "p-secret", verb: str = "create") -> bytes:
    ref = {"resource": "secrets", "namespace": "default", "name": "db", "apiVersion": "v1"}
    return line_of(event(auditID=auditID, verb=verb, requestURI="/api/v1/namespaces/default/secrets", objectRef=ref), requestObject=body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"kind":"Secret","metadata":{"name":"db"},"data":{"password":"' + SECRET_DATA.encode() + b'"},"x":' + nested_arrays(DEEP) + b"}",
        b'{"kind":"Secret","data":{"password":"' + SECRET_DATA.encode() + b'"},"n":1e400}',
        b'[{"op":"add","path":"/data/password","value":"' + SECRET_DATA.encode() + b'"},{"op":"add","path":"/x","value":1e400}]',
    ],
    ids=["deep", "number out of range", "json patch with a number out of range"],
)
def test_a_secret_body_that_cannot_be_parsed_is_withheld_never_leaked(tmp_path: Path, body: bytes) -> None:
    transform = make_transform(redact=RedactConfig(mode="hash", hash_key="k"))
    chunk, dead, _ = run(tmp_path, [secret_line(body, verb="patch" if body.startswith(b"[") else "create")], transform)
    assert dead == []
    (record,) = chunk.records
    assert SECRET_DATA.encode() not in record
    shipped = json.loads(record)
    marker = shipped["requestObject"]
    assert set(marker) == {WITHHELD_KEY, "bytes", "sha256"} and marker["bytes"] == len(body)
    assert "withheld so that no secret in it can leak" in marker[WITHHELD_KEY]
    note = shipped["annotations"][BODY_NOTE_ANNOTATION]
    assert note.startswith("requestObject: replaced by a marker") and f"{len(body)} bytes withheld" in note
    assert shipped["objectRef"]["resource"] == "secrets" and shipped["user"]["username"] == "alice"
    assert transform.withheld_bodies == 1


def test_a_note_never_replaces_annotations_of_another_type(tmp_path: Path) -> None:
    body = b'{"kind":"Secret","data":{"p":"' + SECRET_DATA.encode() + b'"},"x":' + nested_arrays(DEEP) + b"}"
    fields = json.loads(secret_line(b"{}"))
    fields["annotations"] = "a string, not a map"
    fields.pop("requestObject")
    chunk, dead, _ = run(tmp_path, [line_of(fields, requestObject=body)])
    assert dead == []
    shipped = json.loads(chunk.records[0])
    assert shipped["annotations"] == "a string, not a map"
    assert shipped[NOTES_FIELD][BODY_NOTE_ANNOTATION].startswith("requestObject: replaced by a marker")


def test_enrichment_leaves_out_what_it_cannot_compute(tmp_path: Path) -> None:
    lines = [
        line_of(event(auditID="e-stage", stageTimestamp="2024-05-01T10:00:9e9999999Z")),
        line_of(event(auditID="e-nan", stageTimestamp="2024-05-01T10:00:nan000000Z")),
        line_of(event(auditID="e-offset", stageTimestamp="2024-05-01T10:00:00.250000+99:99")),
        line_of(event(auditID="e-calendar", requestReceivedTimestamp="0001-01-01T00:00:00+23:59", stageTimestamp="9999-12-31T23:59:59-23:59")),
        line_of(event(auditID="e-code")).replace(b'"code":201', b'"code":1e400'),
        line_of(event(auditID="e-bigcode")).replace(b'"code":201', b'"code":' + b"9" * 5000),
        line_of(event(auditID="e-user", user="alice", sourceIPs=1e300)),
        line_of(event(auditID="e-ref", objectRef={"resource": ["pods"], "namespace": {"x": 1}}, sourceIPs=[7, "198.51.100.1"])),
    ]
    chunk, dead, _ = run(tmp_path, lines)
    assert dead == [] and len(chunk.records) == len(lines)
    derived = {top_level(r)["auditID"]: top_level(r)["derived"] for r in chunk.records}
    for key in ("e-stage", "e-nan", "e-offset"):
        assert "latency_ms" not in derived[key] and derived[key]["outcome"] == "success"
    assert derived["e-calendar"]["latency_ms"] > 0  # far apart, but computable
    for key in ("e-code", "e-bigcode"):
        assert "outcome" not in derived[key] and derived[key]["latency_ms"] == 250.0
    assert derived["e-user"]["user_kind"] == "unknown" and "source_ip" not in derived["e-user"]
    assert derived["e-ref"]["source_ip"] == "198.51.100.1"


class FaultyTransform:
    """The agent's transform, raising for lines holding `trigger` (an exception nobody foresaw)."""

    def __init__(self, trigger: bytes, exc: Exception) -> None:
        self.inner = make_transform()
        self.trigger = trigger
        self.exc = exc

    def run(self, line: bytes, *, detect: bool = True) -> tuple[bytes | None, list[Any]]:
        return self.apply(line), []

    def apply(self, line: bytes) -> bytes | None:
        if self.trigger in line:
            raise self.exc
        return self.inner.apply(line)


def test_an_exception_in_the_per_line_code_is_contained_to_its_line(tmp_path: Path) -> None:
    lines = good_lines(6)
    lines[2] = lines[2].replace(b'"auditID":"', b'"auditID":"boom-')
    lines[4] = lines[4].replace(b'"auditID":"', b'"auditID":"boom-')
    transform = FaultyTransform(b"boom-", KeyError("x" * 10_000))
    chunk, dead, counts = run(tmp_path, lines, transform)
    assert audit_ids(chunk.records) == ["good-000000000", "good-000000001", "good-000000003", "good-000000005"]
    assert counts["deadletter:processing_error"] == 2 and counts["read"] == 6
    content = b"".join(line + b"\n" for line in lines)
    for record, line in zip(dead, (lines[2], lines[4]), strict=True):
        assert record["reason"].startswith("processing failed: KeyError: 'xxx")
        assert len(record["reason"]) <= MAX_REASON_CHARS
        source = record["source"]
        assert content[source["offset"] : source["offset"] + source["length"]] == line + b"\n"
        assert record["event"].encode() == line
    # the ranges still tile the chunk: every line is acknowledged once its record is
    pos = chunk.start
    for i in range(len(chunk.records)):
        a, b = chunk.range_of(i, i + 1)
        assert a == pos
        pos = b
    assert pos == chunk.end


def test_without_a_transform_deep_json_is_shipped_and_deep_garbage_dead_lettered(tmp_path: Path) -> None:
    deep_ok = line_of(event(auditID="p-plain"), requestObject=nested_objects(DEEP))
    unbalanced = deep_ok[:-2] + b"]}"
    not_object = nested_arrays(DEEP)
    bad_escape = line_of(event(auditID="p-escape"), requestObject=nested_arrays(DEEP, b'"\\ud800"'))
    good = good_lines(2)
    lines = [good[0], deep_ok, unbalanced, not_object, bad_escape, good[1]]
    dl = DeadLetterStore(tmp_path / "plain", max_bytes=64 * MiB, max_event_bytes=16 * MiB)
    processor = LineProcessor(None, dl)  # no policy, no enrichment: only the check
    plain = processor.process(1, "audit.log", read_lines(tmp_path, lines))
    reasons = [r["reason"] for r in dl.iter_records()]
    dl.close()
    assert plain.records == [good[0], deep_ok, good[1]]
    assert processor.counts()["deadletter:malformed"] == 3
    assert reasons[0].startswith("malformed JSON: JSON is malformed: mismatched bracket")
    assert reasons[1] == "not a JSON object"
    assert reasons[2].startswith("malformed JSON")
    truncated = deep_ok[:-3]
    with pytest.raises(msgspec.DecodeError, match="truncated"):
        check_object(truncated)
    # the same verdicts through the transform
    chunk, dead, counts = run(tmp_path, lines)
    assert audit_ids(chunk.records) == [audit_ids([good[0]])[0], "p-plain", audit_ids([good[1]])[0]]
    assert counts["deadletter:malformed"] == 3 and len(dead) == 3


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":[1,2,{"b":null}],"c":"\\u00e9\\ud83d\\ude00","d":-0.5e-3,"e":true}',
        b' \t{ "a" : [ ] , "b" : { } }\r\n',
        b'{"a":1,"a":2}',
        b'{"k{":{"x":1},"\\"q":2}',
        b"{}",
    ],
)
def test_the_iterative_scanner_reads_the_top_level_as_msgspec_does(text: bytes) -> None:
    # wrapped so that msgspec gives up on depth and the scanner has to split it
    deep = text.rstrip()[:-1].rstrip() + (b"," if text.strip() != b"{}" else b"") + b'"zz":' + nested_arrays(DEEP) + b"}"
    members = object_members(deep)
    assert members is not None
    expected = msgspec.json.decode(text)
    assert {k: msgspec.json.decode(v) for k, v in members.items() if k != "zz"} == expected
    assert bytes(members["zz"]) == nested_arrays(DEEP)
    check_object(deep)


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":1,}',
        b'{"a":[1,]}',
        b'{"a":01}',
        b'{"a":1.}',
        b'{"a":"\\ud800"}',
        b'{"a":"\\udc00\\ud800"}',
        b'{"a":"\\q"}',
        b'{"a":"\x01"}',
        b'{"a":NaN}',
        b'{"a" 1}',
        b'{"a":1}}',
        b'{"a":[1}',
        b'{"a":1} x',
        b'{"a":tru}',
        b"{1:2}",
    ],
)
def test_the_iterative_scanner_rejects_what_msgspec_rejects(text: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(text)
    deep = b'{"zz":' + nested_arrays(DEEP) + b"," + text.lstrip(b"{")
    with pytest.raises(msgspec.DecodeError):
        check_object(deep)
    with pytest.raises(msgspec.DecodeError):
        object_members(deep)


def test_decode_event_reads_the_head_of_a_deep_line() -> None:
    line = POISON["deep-user user.extra"]
    view = decode_event(line).view
    assert view.user and view.user.username == "alice" and view.verb == "create"
    assert view.objectRef and view.objectRef.resource == "configmaps"

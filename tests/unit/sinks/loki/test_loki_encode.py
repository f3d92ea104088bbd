"""LokiSink.encode/split: bodies decoded by the protobuf library from Loki's push schema (snappy block format) and
as JSON; streams, labels, lines, nanosecond timestamps, structured metadata, order, request sizes, oversize events."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from typing import Any

import cramjam
import msgspec
import pytest

from kube_audit_shipper.delivery.contract import Request
from kube_audit_shipper.demo.events import AuditEventGenerator, EventMix
from kube_audit_shipper.sinks.loki.config import LokiSinkConfig
from kube_audit_shipper.sinks.loki.event import TRIM_ANNOTATION, parse_ns
from kube_audit_shipper.sinks.loki.sink import LokiSink
from tests.support.corpus import corpus_lines, numbered_lines
from tests.support.loki_wire import parse_labels, push_request_class
from tests.support.sink_context import context

PushRequest = push_request_class()
START = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
Decoded = list[tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]]


def make(**kw: Any) -> LokiSink:
    return LokiSink(LokiSinkConfig(name="loki", url="http://127.0.0.1:3100", **kw), context("/var/lib/kas"))


def labels_of(text: str) -> dict[str, str]:
    return dict(parse_labels(text))


def decode(request: Request) -> Decoded:
    """The request as Loki reads it: protobuf through the protobuf library, or JSON."""
    ctype = request.headers["Content-Type"]
    if ctype == "application/x-protobuf":
        assert "Content-Encoding" not in request.headers
        msg = PushRequest()
        raw = bytes(cramjam.snappy.decompress_raw(request.payload))
        assert len(raw) == request.raw_bytes
        msg.ParseFromString(raw)
        return [
            (
                labels_of(s.labels),
                [(e.timestamp.seconds * 10**9 + e.timestamp.nanos, e.line, {p.name: p.value for p in e.structuredMetadata}) for e in s.entries],
            )
            for s in msg.streams
        ]
    assert ctype == "application/json"
    raw = gzip.decompress(request.payload) if request.headers.get("Content-Encoding") == "gzip" else request.payload
    assert len(raw) == request.raw_bytes
    doc = msgspec.json.decode(raw)
    return [(s["stream"], [(int(v[0]), v[1], v[2] if len(v) > 2 else {}) for v in s["values"]]) for s in doc["streams"]]


def by_index(requests: list[Request]) -> dict[int, tuple[dict[str, str], int, str, dict[str, str]]]:
    """Batch position -> (labels, ts, line, metadata), checking each request's indices follow its entries."""
    out = {}
    for req in requests:
        flat = [(labels, e) for labels, entries in decode(req) for e in entries]
        order = [req.indices[k] for _, positions in req.meta["streams"] for k in positions]
        assert len(order) == len(flat) == len(req.indices) == len(set(req.indices))
        for i, (labels, (ts, line, sm)) in zip(order, flat):
            out[i] = (labels, ts, line, sm)
    return out


@pytest.mark.parametrize("options", [{"encoding": "protobuf"}, {"encoding": "json"}, {"encoding": "json", "json_compression": "none"}])
def test_every_corpus_event_round_trips(options: dict[str, Any]) -> None:
    records = list(corpus_lines())
    got = by_index(make(label_fields=["verb", "stage"], **options).encode(records))
    assert sorted(got) == list(range(len(records)))
    for i, record in enumerate(records):
        labels, _, line, sm = got[i]
        assert line.encode() == record
        event = msgspec.json.decode(record)
        assert labels["job"] == "kube-audit" and labels["node"] == "cp-1"
        assert labels.get("verb") == (event.get("verb") or None) and labels.get("stage") == (event.get("stage") or None)
        if event.get("auditID"):
            assert sm["auditID"] == event["auditID"]
        user = event.get("user")
        assert sm.get("user") == (user.get("username") or None if isinstance(user, dict) else None)


def test_timestamps_have_nanosecond_precision_and_fallbacks() -> None:
    events = [
        {"auditID": "a", "stageTimestamp": "2026-11-22T10:00:00.123456789Z", "requestReceivedTimestamp": "2026-11-22T09:00:00Z"},
        {"auditID": "b", "requestReceivedTimestamp": "2026-11-22T10:00:01.5+01:00"},
        {"auditID": "c", "timestamp": "2017-09-11T19:55:05Z"},
        {"auditID": "d", "requestReceivedTimestamp": "2022-11-29 00:09:04.38"},
        {"auditID": "e", "stageTimestamp": "2018-10-25T13:58:49.736141Z"},
        {"auditID": "f", "stageTimestamp": "not a time"},
    ]
    before = datetime.now(UTC)
    got = by_index(make().encode([msgspec.json.encode(e) for e in events]))
    ts = [got[i][1] for i in range(len(events))]
    assert ts[0] == 1795341600_123456789
    assert ts[1] == parse_ns("2026-11-22T09:00:01.5Z") == 1795338001_500000000
    assert ts[2] == 1505159705 * 10**9 and ts[3] == 1669680544_380000000 and ts[4] == 1540475929_736141000
    assert abs(ts[5] / 1e9 - before.timestamp()) < 60  # no usable timestamp: the time it was encoded


def test_streams_are_in_timestamp_order_and_equal_timestamps_keep_their_order() -> None:
    stamps = ["10:00:05", "10:00:01", "10:00:03", "10:00:01", "10:00:03", "10:00:01"]
    records = [msgspec.json.encode({"auditID": f"e{i}", "verb": "get", "stageTimestamp": f"2026-11-22T{t}.000000Z"}) for i, t in enumerate(stamps)]
    (req,) = make().encode(records)
    assert req.indices == [1, 3, 5, 2, 4, 0]
    ((_, entries),) = decode(req)
    assert [msgspec.json.decode(line)["auditID"] for _, line, _ in entries] == ["e1", "e3", "e5", "e2", "e4", "e0"]


def test_requests_stay_under_max_request_bytes_and_streams_stay_ordered_across_them() -> None:
    gen = AuditEventGenerator(7, start_time=START)
    records = list(gen.lines(3000))
    records.reverse()  # the batch in reverse time order: encode must sort
    for encoding in ("protobuf", "json"):
        requests = make(encoding=encoding, max_request_bytes=64 << 10, label_fields=["verb", "level"]).encode(records)
        assert len(requests) > 10 and all(r.raw_bytes <= 64 << 10 for r in requests if len(r.indices) > 1)
        got = by_index(requests)
        assert sorted(got) == list(range(len(records)))
        last: dict[str, int] = {}
        for req in requests:
            for labels, entries in decode(req):
                key = repr(sorted(labels.items()))
                stamps = [ts for ts, _, _ in entries]
                assert stamps == sorted(stamps) and stamps[0] >= last.get(key, 0)
                last[key] = stamps[-1]


def test_a_large_batch_is_cut_at_1_mib_by_default() -> None:
    records = list(AuditEventGenerator(3, start_time=START).write_bytes(5 << 20))
    requests = make().encode(records)
    assert len(requests) >= 5 and all(r.raw_bytes <= 1 << 20 for r in requests)
    assert sum(len(r.indices) for r in requests) == len(records)


def test_labels_fixed_node_fields_and_missing_fields() -> None:
    records = [
        msgspec.json.encode(
            {
                "verb": "get",
                "level": "Metadata",
                "objectRef": {"resource": "pods", "namespace": "ns1"},
                "responseStatus": {"code": 200},
                "annotations": {"authorization.k8s.io/decision": "allow"},
            }
        ),
        msgspec.json.encode({"verb": "list"}),
        msgspec.json.encode({"user": "not-an-object", "verb": ["odd"], "objectRef": {"resource": 7}}),
    ]
    cfg = {
        "labels": {"job": "audit", "cluster": "c0123"},
        "label_fields": ["verb", "level", "resource", "code", "decision", "namespace"],
        "force_labels": ["namespace"],
    }
    got = by_index(make(**cfg).encode(records))
    assert got[0][0] == {
        "job": "audit",
        "cluster": "c0123",
        "node": "cp-1",
        "verb": "get",
        "level": "Metadata",
        "resource": "pods",
        "code": "200",
        "decision": "allow",
        "namespace": "ns1",
    }
    assert got[1][0] == {"job": "audit", "cluster": "c0123", "node": "cp-1", "verb": "list"}
    assert got[2][0] == {"job": "audit", "cluster": "c0123", "node": "cp-1", "verb": "odd", "resource": "7"}
    assert by_index(make(node_label="").encode(records[:1]))[0][0] == {"job": "kube-audit", "verb": "get"}


def test_label_values_are_quoted_and_cut_to_loki_limits() -> None:
    odd = 'a "quoted" \\ value\nwith é and \u2028'
    records = [msgspec.json.encode({"verb": odd}), msgspec.json.encode({"verb": "é" * 3000})]
    for encoding in ("protobuf", "json"):
        got = by_index(make(encoding=encoding).encode(records))
        assert got[0][0]["verb"] == odd
        assert len(got[1][0]["verb"].encode()) == 2048 and got[1][0]["verb"] == "é" * 1024


def test_structured_metadata_selection() -> None:
    record = msgspec.json.encode({"auditID": "id-1", "user": {"username": "alice"}, "objectRef": {"resource": "pods", "name": "p"}, "verb": "get"})
    assert by_index(make().encode([record]))[0][3] == {"auditID": "id-1", "user": "alice", "resource": "pods"}
    assert by_index(make(structured_metadata=["name", "verb"]).encode([record]))[0][3] == {"name": "p", "verb": "get"}
    assert by_index(make(structured_metadata=[]).encode([record]))[0][3] == {}


def test_oversize_events_are_trimmed_to_metadata_and_annotated() -> None:
    mix = EventMix(big_event_probability=0.05, big_event_bytes=900_000)
    records = list(AuditEventGenerator(11, start_time=START, mix=mix).lines(200))
    big = [i for i, r in enumerate(records) if len(r) > 256 << 10]
    assert big, "the mix should produce some big events"
    sink = make(label_fields=["verb", "level"])
    got = by_index(sink.encode(records))
    assert sink.trimmed_events == len(big)
    for i in big:
        labels, ts, line, sm = got[i]
        event, original = msgspec.json.decode(line), msgspec.json.decode(records[i])
        assert len(line.encode()) <= 256 << 10 and "requestObject" not in event and "responseObject" not in event
        assert event["level"] == "Metadata" == labels["level"] and event["auditID"] == original["auditID"] == sm["auditID"]
        assert event["annotations"][TRIM_ANNOTATION].startswith(f"trimmed to Metadata level: the {len(records[i])}-byte event")
        assert {k: v for k, v in event["annotations"].items() if k != TRIM_ANNOTATION} == original.get("annotations", {})
        assert ts == parse_ns(original["stageTimestamp"])
    for i in set(range(len(records))) - set(big):
        assert got[i][2].encode() == records[i]


def test_an_event_still_too_long_at_metadata_level_loses_its_big_fields() -> None:
    record = msgspec.json.encode(
        {
            "auditID": "x",
            "level": "RequestResponse",
            "requestURI": "/api/" + "u" * 40_000,
            "verb": "get",
            "annotations": {"a": "b"},
            "requestObject": {"k": "v" * 30_000},
        }
    )
    (_, _, line, _) = by_index(make(max_line_bytes=16 << 10).encode([record]))[0]
    event = msgspec.json.decode(line)
    assert len(line) <= 16 << 10 and "requestURI" not in event and event["verb"] == "get" and event["annotations"]["a"] == "b"
    assert event["annotations"][TRIM_ANNOTATION].endswith("fields over 1024 bytes removed: requestURI, requestObject")


def test_split_halves_in_timestamp_order_and_maps_indices_back() -> None:
    records = numbered_lines(40)
    sink = make()
    (req,) = sink.encode(records)
    halves = sink.split(req, records)
    assert [len(h.indices) for h in halves] == [20, 20]
    assert list(halves[0].indices) + list(halves[1].indices) == list(req.indices)
    for half in halves:
        for i, (_, _, line, _) in by_index([half]).items():
            assert line.encode() == records[i]
    single = Request(payload=b"", indices=[5], meta=req.meta)
    assert sink.split(single, records) == []


def test_meta_describes_each_entry_for_classify() -> None:
    records = [
        msgspec.json.encode({"auditID": "a", "verb": "get", "user": {"username": "bob"}, "stageTimestamp": "2026-11-22T10:00:00.5Z"}),
        msgspec.json.encode({"auditID": "b", "verb": "list", "stageTimestamp": "2026-11-22T10:00:00.1Z"}),
    ]
    (req,) = make().encode(records)
    assert req.indices == [1, 0]
    assert req.meta["ts"] == [1795341600_100000000, 1795341600_500000000]
    assert req.meta["line_len"] == [len(records[1]), len(records[0])]
    assert req.meta["sm_bytes"] == [len("auditID") + 1, len("auditID") + 1 + len("user") + 3] and req.meta["sm_count"] == [1, 2]
    assert [(s.labels["verb"], pos) for s, pos in req.meta["streams"]] == [("list", [0]), ("get", [1])]


def test_json_gzip_headers() -> None:
    (req,) = make(encoding="json").encode(numbered_lines(3))
    assert req.headers == {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    (req,) = make(encoding="json", json_compression="none").encode(numbered_lines(3))
    assert req.headers == {"Content-Type": "application/json"} and req.payload.startswith(b'{"streams":[{"stream":{')


def test_the_biggest_stream_of_a_request_goes_last() -> None:
    """Loki's ingester answers with the last stream's error only: the stream most likely to hit its rate limit is last."""
    records = [
        msgspec.json.encode({"verb": verb, "auditID": f"{verb}{i}", "pad": "p" * size})
        for verb, size, n in (("get", 10, 50), ("list", 2000, 20), ("watch", 100, 5))
        for i in range(n)
    ]
    (req,) = make().encode(records)
    assert [s.labels["verb"] for s, _ in req.meta["streams"]] == ["watch", "get", "list"]
    assert [labels["verb"] for labels, _ in decode(req)] == ["watch", "get", "list"]


def test_the_sink_meets_the_contract() -> None:
    from kube_audit_shipper.delivery.contract import Sink

    sink = make()
    assert isinstance(sink, Sink) and sink.max_concurrency == 1 and sink.name == "loki"
    assert sink.push_url == "http://127.0.0.1:3100/loki/api/v1/push"
    assert (
        LokiSink(LokiSinkConfig(name="l", url="http://loki:3100/loki/api/v1/push/"), context("/var/lib/kas", node="n")).push_url
        == "http://loki:3100/loki/api/v1/push"
    )
    assert make().encode([]) == []
    (req,) = make().encode([b"not json", b"[1,2]"])  # never from the pipeline; still encoded, never an exception
    assert [line for _, entries in decode(req) for _, line, _ in entries] == ["not json", "[1,2]"]

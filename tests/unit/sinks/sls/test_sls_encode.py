"""SLS encoding: the LogGroup bytes equal the official SDK's protobuf serialization, each event is shaped as
Logtail's JSON mode shapes it, __time__ comes from the event, limits split requests, and an event over the
per-value limit is trimmed to Metadata level and annotated instead of lost."""

from __future__ import annotations

import json
from typing import Any

import lz4.block
import msgspec
import pytest
import zstandard
from aliyun.log.log_logs_pb2 import LogGroup

from kube_audit_shipper.sinks.sls import pb
from kube_audit_shipper.sinks.sls.config import SlsSinkConfig
from kube_audit_shipper.sinks.sls.shape import TRUNCATED_ANNOTATION, parse_time, shape
from kube_audit_shipper.sinks.sls.sink import SlsSink, hash_key
from tests.support.corpus import corpus_lines, numbered_lines
from tests.support.sink_context import context


def make_sink(**over: Any) -> SlsSink:
    spec = {
        "name": "sls",
        "type": "sls",
        "endpoint": "cn-hangzhou.log.aliyuncs.com",
        "project": "k8s-log-c0123",
        "logstore": "audit-c0123",
        "access_key_id": "AKID",
        "access_key_secret": "SECRET",
        "tags": {"cluster": "c0123"},
        "source": "10.0.0.7",
    }
    spec.update(over)
    return SlsSink(msgspec.convert(spec, SlsSinkConfig), context("/var/lib/kas", input_paths=["/var/log/kubernetes/audit/audit.log"]))


def decode(request: Any, compression: str = "lz4") -> Any:
    raw_size = int(request.headers["x-log-bodyrawsize"])
    if compression == "lz4":
        raw = lz4.block.decompress(request.payload, uncompressed_size=raw_size)
    elif compression == "zstd":
        raw = zstandard.ZstdDecompressor().decompress(request.payload)
    else:
        raw = request.payload
    assert len(raw) == raw_size == request.raw_bytes
    group = LogGroup()
    group.ParseFromString(raw)
    assert group.IsInitialized()
    return group, raw


def contents(log: Any) -> dict[str, str]:
    return {c.Key: c.Value for c in log.Contents}


def test_loggroup_bytes_equal_the_sdk_serialization() -> None:
    logs = [
        pb.encode_log(1_700_000_000, 123_456_789, [(b"verb", b"create"), (b"user", '{"username":"ü"}'.encode())]),
        pb.encode_log(5, None, [(b"k", b"")]),
        pb.encode_log(0xFFFFFFFF, 0, []),
    ]
    middle, tags = pb.group_header("", "10.0.0.7", [("__hostname__", "cp-1"), ("cluster", "c0123")])
    ours = pb.encode_group(logs, middle, tags)

    g = LogGroup()
    g.Topic = ""
    g.Source = "10.0.0.7"
    for t, ns, cs in [(1_700_000_000, 123_456_789, [("verb", "create"), ("user", '{"username":"ü"}')]), (5, None, [("k", "")]), (0xFFFFFFFF, 0, [])]:
        log = g.Logs.add()
        log.Time = t
        if ns is not None:
            log.Time_ns = ns
        for k, v in cs:
            c = log.Contents.add()
            c.Key, c.Value = k, v
    for k, v in [("__hostname__", "cp-1"), ("cluster", "c0123")]:
        tag = g.LogTags.add()
        tag.Key, tag.Value = k, v
    assert ours == g.SerializeToString()
    assert [pb.log_field_size(x) for x in logs] == [g.Logs[i].ByteSize() + 1 + len(pb.varint(g.Logs[i].ByteSize())) for i in range(3)]


def test_values_are_shaped_as_logtail_json_mode() -> None:
    rec = b'{"s":"a\\"b\\u00fc","n":101,"f":1.5,"t":true,"x":false,"z":null,"o":{"a": [1, 2], "b": "x y"},"a":["1.2.3.4"],"e":{}}'
    got = dict(shape(rec, now=0).contents)
    assert got == {
        b"s": 'a"bü'.encode(),
        b"n": b"101",
        b"f": b"1.5",
        b"t": b"true",
        b"x": b"false",
        b"z": b"",
        b"o": b'{"a":[1,2],"b":"x y"}',
        b"a": b'["1.2.3.4"]',
        b"e": b"{}",
    }


def test_time_comes_from_stage_then_received_then_timestamp_else_now() -> None:
    both = b'{"requestReceivedTimestamp":"2018-10-26T13:38:34.867116Z","stageTimestamp":"2018-10-26T13:38:34.902914Z","timestamp":"2018-10-26T13:38:30Z"}'
    s = shape(both, now=1.5)
    assert (s.time_s, s.time_ns, s.timed) == (1540561114, 902_914_000, True)
    s = shape(b'{"requestReceivedTimestamp":"2018-10-26T13:38:34.867116Z","timestamp":"2018-10-26T13:38:30Z"}', now=1.5)
    assert (s.time_s, s.time_ns) == (1540561114, 867_116_000)
    s = shape(b'{"timestamp":"2017-09-21T18:41:23Z","stageTimestamp":"garbage"}', now=1.5)
    assert (s.time_s, s.time_ns) == (1506019283, 0)
    s = shape(b'{"verb":"get"}', now=1234.25)
    assert (s.time_s, s.time_ns, s.timed) == (1234, 250_000_000, False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-02-29T23:59:59.123456789Z", (1709251199, 123456789)),
        ("2024-02-29 23:59:59.1Z", (1709251199, 100000000)),
        ("2024-03-01T07:59:59+08:00", (1709251199, 0)),
        ("2024-03-01T07:59:59.5+0800", (1709251199, 500000000)),
        ("2024-02-29T23:59:59", (1709251199, 0)),
        ("2024-13-01T00:00:00Z", None),
        ("yesterday", None),
    ],
)
def test_parse_time(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_time(text) == expected


def test_corpus_encodes_to_one_group_with_topic_source_and_tags() -> None:
    sink = make_sink(topic="k8s-audit")
    lines = list(corpus_lines())
    reqs = sink.encode(lines)
    assert len(reqs) == 1
    group, _ = decode(reqs[0])
    assert len(group.Logs) == len(lines)
    assert group.Topic == "k8s-audit" and group.Source == "10.0.0.7"
    tags = {t.Key: t.Value for t in group.LogTags}
    assert tags["__hostname__"] == "cp-1" and tags["__path__"] == "/var/log/kubernetes/audit/audit.log" and tags["cluster"] == "c0123"
    prefix, seq = tags["__pack_id__"].split("-")
    assert len(prefix) == 16 and int(seq, 16) == 1
    # every top-level key of every event is a content, in order
    for line, log in zip(lines, group.Logs):
        event = json.loads(line)
        assert list(contents(log)) == list(event)
    h = reqs[0].headers
    assert h["Content-Type"] == "application/x-protobuf" and h["x-log-compresstype"] == "lz4" and h["x-log-apiversion"] == "0.6.0"
    assert h["Content-MD5"] == __import__("hashlib").md5(reqs[0].payload).hexdigest().upper()
    # the next group gets the next pack sequence number, same prefix
    tags2 = {t.Key: t.Value for t in decode(sink.encode(lines[:1])[0])[0].LogTags}
    assert tags2["__pack_id__"] == f"{prefix}-2"


@pytest.mark.parametrize("compression", ["lz4", "zstd", "none"])
def test_compression_round_trips(compression: str) -> None:
    sink = make_sink(compression=compression)
    req = sink.encode(list(corpus_lines())[:50])[0]
    group, raw = decode(req, compression)
    assert len(group.Logs) == 50
    assert ("x-log-compresstype" in req.headers) == (compression != "none")
    if compression != "none":
        assert len(req.payload) < len(raw)


def test_requests_never_exceed_4096_logs_or_the_raw_byte_limit() -> None:
    sink = make_sink()
    lines = numbered_lines(10_000)
    reqs = sink.encode(lines)
    assert [len(r.indices) for r in reqs] == [4096, 4096, 10_000 - 8192]
    assert [i for r in reqs for i in r.indices] == list(range(10_000))
    small = make_sink(max_request_bytes=256 << 10)
    reqs = small.encode(lines[:3000])
    assert len(reqs) > 3
    for r in reqs:
        group, raw = decode(r)
        assert len(raw) <= 256 << 10 and len(group.Logs) == len(r.indices)
    assert [i for r in reqs for i in r.indices] == list(range(3000))


def big_event(body_bytes: int) -> bytes:
    event = json.loads(next(line for line in corpus_lines() if b'"requestObject"' in line and b'"level":"RequestResponse"' in line))
    event["requestObject"] = {"kind": "ConfigMap", "data": {"blob": "é" * (body_bytes // 2)}}
    event["responseObject"] = {"kind": "ConfigMap", "data": {"blob": "x" * 100}}
    return json.dumps(event).encode()


def test_an_event_over_the_per_value_limit_is_trimmed_to_metadata_and_annotated() -> None:
    sink = make_sink()
    rec = big_event(3 << 20)
    reqs = sink.encode([numbered_lines(1)[0], rec, numbered_lines(1, start=1)[0]])
    assert len(reqs) == 1 and list(reqs[0].indices) == [0, 1, 2]
    group, raw = decode(reqs[0])
    assert len(raw) <= 5 << 20
    c = contents(group.Logs[1])
    original = json.loads(rec)
    assert "requestObject" not in c and "responseObject" not in c
    assert c["level"] == "Metadata"
    assert c["auditID"] == original["auditID"] and c["verb"] == original["verb"]
    ann = json.loads(c["annotations"])
    note = ann[TRUNCATED_ANNOTATION]
    assert "from RequestResponse" in note and "requestObject (" in note and "per-value limit of 1048576" in note
    for k, v in original.get("annotations", {}).items():
        assert ann[k] == v
    assert max(len(x.Value.encode()) for x in group.Logs[1].Contents) <= 1 << 20
    assert sink.trimmed_events == 1


def test_a_value_still_too_large_after_trimming_is_cut_and_marked() -> None:
    sink = make_sink()
    event = json.loads(numbered_lines(1)[0])
    event["requestURI"] = "/api/v1/namespaces?x=" + "a" * (2 << 20)
    group, _ = decode(sink.encode([json.dumps(event).encode()])[0])
    c = contents(group.Logs[0])
    assert len(c["requestURI"].encode()) <= 1 << 20 and c["requestURI"].endswith(" bytes]")
    assert "cut to fit: requestURI" in json.loads(c["annotations"])[TRUNCATED_ANNOTATION]


def test_split_halves_and_a_single_too_large_event_is_resent_minimal() -> None:
    sink = make_sink()
    lines = numbered_lines(10)
    (req,) = sink.encode(lines)
    halves = sink.split(req, lines)
    assert [list(h.indices) for h in halves] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    (one,) = sink.encode([big_event(200_000)])
    assert sink.split(one, [big_event(200_000)]) == []  # not marked too large by the server: nothing to do
    one.meta["too_large"] = True  # what send notes from a PostBodyTooLarge answer
    (minimal,) = sink.split(one, [big_event(200_000)])
    assert minimal.meta["minimal"] and list(minimal.indices) == [0]
    c = contents(decode(minimal)[0].Logs[0])
    assert "requestObject" not in c and TRUNCATED_ANNOTATION in json.loads(c["annotations"])
    minimal.meta["split_code"] = "PostBodyTooLarge"
    assert sink.split(minimal, [big_event(200_000)]) == []  # already minimal: the engine dead-letters it


def test_shard_hash_key() -> None:
    assert hash_key("0123456789abcdef0123456789ABCDEF") == "0123456789ABCDEF0123456789ABCDEF"
    assert hash_key("node-1") == __import__("hashlib").md5(b"node-1").hexdigest().upper()
    sink = make_sink(shard_hash_key="node-1")
    assert sink.resource == "/logstores/audit-c0123/shards/route" and sink.params == {"key": hash_key("node-1")}
    assert make_sink().resource == "/logstores/audit-c0123/shards/lb"


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"signature_version": "v4", "endpoint": "http://127.0.0.1:1"}, "needs region"),
        ({"access_key_secret": None}, "go together"),
        ({"endpoint": "ftp://x"}, "expected a host name"),
        ({"tags": {"__path__": "x"}}, "reserved"),
        ({"endpoint": "http://127.0.0.1:80", "project_in_host": True}, "IP endpoint"),
    ],
)
def test_config_errors(over: dict[str, Any], message: str) -> None:
    spec = {
        "name": "s",
        "type": "sls",
        "endpoint": "cn-hangzhou.log.aliyuncs.com",
        "project": "k8s-log-c0123",
        "logstore": "audit-c0123",
        "access_key_id": "A",
        "access_key_secret": "S",
    }
    spec.update(over)
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(spec, SlsSinkConfig)


def test_v4_region_comes_from_the_endpoint() -> None:
    cfg = msgspec.convert(
        {"name": "s", "type": "sls", "endpoint": "cn-shanghai-intranet.log.aliyuncs.com", "project": "pp1", "logstore": "ls", "signature_version": "v4"},
        SlsSinkConfig,
    )
    assert cfg.effective_region == "cn-shanghai"


def test_endpoint_forms_host_and_project_header() -> None:
    named = make_sink()
    assert named.client.base_url == "https://k8s-log-c0123.cn-hangzhou.log.aliyuncs.com"  # https by default
    assert named.client.host_header == "k8s-log-c0123.cn-hangzhou.log.aliyuncs.com"
    assert "x-log-project" not in named.encode(numbered_lines(1))[0].headers
    ip = make_sink(endpoint="http://10.1.2.3:80")
    assert ip.client.base_url == "http://10.1.2.3:80" and ip.client.host_header == "k8s-log-c0123.10.1.2.3:80"
    assert ip.encode(numbered_lines(1))[0].headers["x-log-project"] == "k8s-log-c0123"
    proxy = make_sink(endpoint="https://sls-proxy.internal:8443", project_in_host=False)
    assert proxy.client.base_url == "https://sls-proxy.internal:8443" and proxy.client.host_header == "sls-proxy.internal:8443"
    assert proxy.encode(numbered_lines(1))[0].headers["x-log-project"] == "k8s-log-c0123"


@pytest.mark.parametrize("seed", range(12))
def test_fit_always_fits_and_keeps_the_identity(seed: int) -> None:
    import random

    from kube_audit_shipper.sinks.sls.shape import fit, log_size

    rnd = random.Random(seed)
    event = json.loads(numbered_lines(1, start=seed)[0])
    for key in rnd.sample(["requestURI", "userAgent", "requestObject", "responseObject", "annotations", "extra"], 3):
        size = rnd.choice([10, 900_000, 1_100_000, 3_000_000])
        event[key] = {"k": "ü" * (size // 2)} if key.endswith("Object") or key == "annotations" else "x" * size
    max_value, max_log = 1 << 20, rnd.choice([(5 << 20) - 2048, 2 << 20])
    shaped = fit(shape(json.dumps(event).encode()), max_value=max_value, max_log=max_log, with_ns=True)
    assert max(len(v) for _, v in shaped.contents) <= max_value
    assert log_size(shaped, True) <= max_log
    got = dict(shaped.contents)
    assert got[b"auditID"] == event["auditID"].encode() and got[b"verb"] == event["verb"].encode()
    if shaped.note:
        assert (
            shaped.note.encode() in got.get(b"annotations", b"") + got.get(b"annotations_truncated", b"")
            or TRUNCATED_ANNOTATION.encode() in got[b"annotations"]
        )

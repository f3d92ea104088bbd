"""LokiSink.classify on Loki's answers, verbatim from shared/reference/loki-and-s3-backends.md §3 where it gives them,
and on transport errors. Each per-entry message is mapped back to the exact records it names."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import msgspec
import pytest

from kube_audit_shipper.delivery.contract import Blocked, Delivered, Rejected, Reply, Request, Retry, Split
from kube_audit_shipper.sinks.http.client import CredentialsError, TlsSetupError
from kube_audit_shipper.sinks.loki.config import LokiSinkConfig
from kube_audit_shipper.sinks.loki.replies import reason_code, retry_after
from kube_audit_shipper.sinks.loki.sink import LokiSink
from tests.support.sink_context import context

OOO_LABELS = {"case": "ooo", "job": "edge", "run": "r1"}
OOO_STREAM = '{case="ooo", job="edge", run="r1", service_name="edge"}'
TEXT = {"Content-Type": "text/plain; charset=utf-8"}


def sink(labels: dict[str, str] | None = None, **kw: Any) -> LokiSink:
    return LokiSink(
        LokiSinkConfig(name="loki", url="http://127.0.0.1:3100", labels=labels or OOO_LABELS, node_label="", label_fields=[], **kw), context("/var/lib/kas")
    )


def event(audit_id: str, stamp: str, **extra: Any) -> bytes:
    return msgspec.json.encode({"auditID": audit_id, "stageTimestamp": stamp, **extra})


def one_request(s: LokiSink, records: list[bytes]) -> Request:
    (req,) = s.encode(records)
    return req


def reply(status: int, body: str = "", headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {**TEXT, **(headers or {})}, (body + "\n").encode() if body else b"")


def test_204_is_delivered() -> None:
    s = sink()
    assert s.classify(one_request(s, [event("a", "2026-11-22T10:00:00Z")]), Reply(204, {}, b"")) == Delivered()


def test_too_far_behind_rejects_exactly_that_entry_and_not_the_rest() -> None:
    s = sink()
    records = [event("fresh", "2026-11-22T10:14:55.1Z"), event("behind", "2026-11-22T08:14:55.882227707Z"), event("fresh2", "2026-11-22T10:14:56Z")]
    req = one_request(s, records)
    body = (
        "entry with timestamp 2026-11-22 08:14:55.882227707 +0000 UTC ignored, reason: 'entry too far behind, entry timestamp is: "
        "2026-11-22T08:14:55Z, oldest acceptable timestamp is: 2026-11-22T09:14:55Z',\n"
        f"user 'fake', total ignored: 1 out of 3 for stream: {OOO_STREAM}"
    )
    out = s.classify(req, reply(400, body))
    assert isinstance(out, Rejected) and out.indices == [1] and out.retry_rest is False
    assert out.reason.startswith("too_far_behind: entry with timestamp 2026-11-22 08:14:55.882227707 +0000 UTC ignored")
    assert out.reasons == {1: out.reason}


def test_more_entries_behind_than_loki_lists_are_the_oldest() -> None:
    s = sink()
    records = [event(f"old{i}", f"2026-11-22T07:00:{i:02d}Z") for i in range(12)] + [event("new", "2026-11-22T10:00:00Z")]
    req = one_request(s, records)
    lines = "".join(
        f"entry with timestamp 2026-11-22 07:00:{i:02d} +0000 UTC ignored, reason: 'entry too far behind, entry timestamp is: "
        f"2026-11-22T07:00:{i:02d}Z, oldest acceptable timestamp is: 2026-11-22T09:00:00Z',\n"
        for i in range(10)
    )
    out = s.classify(req, reply(400, lines + f"user 'fake', total ignored: 12 out of 13 for stream: {OOO_STREAM}"))
    assert isinstance(out, Rejected) and sorted(out.indices) == list(range(12))
    assert out.reasons is not None and "2 entries not listed by Loki" in out.reasons[11]


def test_too_old_too_new_line_size_grouped() -> None:
    s = sink({"job": "edge"})
    old = [event(f"old{i}", f"2026-11-14T10:14:55.{i}Z") for i in range(2)]
    records = [*old, event("ok", "2026-11-22T10:00:00Z"), event("new", "2026-11-22T11:14:55.5Z"), event("long", "2026-11-22T10:00:01Z", pad="x" * 300)]
    req = one_request(s, records)
    stream = '{job="edge", service_name="edge"}'
    body = "; ".join(
        [
            f"2 errors like: entry for stream '{stream}' has timestamp too old: 2026-11-14T10:14:55Z, oldest acceptable timestamp is: 2026-11-15T10:14:55Z",
            f"1 errors like: entry for stream '{stream}' has timestamp too new: 2026-11-22T11:14:55Z",
            f"1 errors like: max entry size '262144' bytes exceeded for stream '{stream}' while adding an entry with length '{len(records[4])}' bytes",
        ]
    )
    out = s.classify(req, reply(400, body))
    assert isinstance(out, Rejected) and sorted(out.indices) == [0, 1, 3, 4] and not out.retry_rest
    assert out.reasons is not None
    assert {reason_code(out.reasons[i]) for i in (0, 1)} == {"too_old"} and reason_code(out.reasons[3]) == "too_new"
    assert out.reasons[4].startswith("line_too_long: max entry size '262144' bytes exceeded")
    assert out.reason.startswith("too_old: entry for stream") and out.reason.endswith("(and 2 more entries)")


def test_verbatim_single_messages() -> None:
    s = sink({"job": "edge"})
    stream = '{job="edge", service_name="edge"}'
    cases = [
        (
            event("a", "2026-11-14T10:14:55Z"),
            (f"entry for stream '{stream}' has timestamp too old: 2026-11-14T10:14:55Z, oldest acceptable timestamp is: 2026-11-15T10:14:55Z"),
            "too_old",
        ),
        (event("a", "2026-11-22T11:14:55Z"), f"entry for stream '{stream}' has timestamp too new: 2026-11-22T11:14:55Z", "too_new"),
        (event("a", "2026-11-22T10:00:00Z"), f"entry for stream '{stream}' has 16 label names; limit 15", "too_many_labels"),
        (event("a", "2026-11-22T10:00:00Z"), f"stream '{stream}' has label value too long: 'vvvv'", "label_value_too_long"),
        (event("a", "2026-11-22T10:00:00Z"), f"stream '{stream}' has label name too long: 'nnnn'", "label_name_too_long"),
    ]
    for record, body, code in cases:
        req = one_request(s, [record, event("other", "2026-11-22T10:00:00.5Z", verb="x")])
        out = s.classify(req, reply(400, body))
        expected = [0] if code in ("too_old", "too_new") else [0, 1]  # label problems: the whole stream
        assert isinstance(out, Rejected) and sorted(out.indices) == expected and reason_code(out.reason) == code, body


def test_mixed_request_rejects_only_the_bad_stream() -> None:
    s = LokiSink(
        LokiSinkConfig(name="loki", url="http://x:3100", labels={"job": "edge"}, node_label="", label_fields=["verb"]), context("/var/lib/kas", node="n")
    )
    records = [event("ok", "2026-11-22T10:00:00Z", verb="get"), event("old", "2026-11-14T10:14:55Z", verb="list")]
    req = one_request(s, records)
    body = (
        'entry for stream \'{job="edge", service_name="edge", verb="list"}\' has timestamp too old: 2026-11-14T10:14:55Z, '
        "oldest acceptable timestamp is: 2026-11-15T10:14:55Z"
    )
    out = s.classify(req, reply(400, body))
    assert isinstance(out, Rejected) and out.indices == [1] and out.retry_rest is False


def test_unmatchable_400_rejects_the_request_and_label_parse_errors_too() -> None:
    s = sink()
    req = one_request(s, [event("a", "2026-11-22T10:00:00Z"), event("b", "2026-11-22T10:00:01Z")])
    out = s.classify(req, reply(400, "couldn't parse labels: 1:5: parse error: unexpected character inside braces: '-'"))
    assert isinstance(out, Rejected) and sorted(out.indices) == [0, 1] and out.reason.startswith("invalid_labels: couldn't parse labels")
    out = s.classify(req, reply(400, "entry for stream '{job=\"someone-else\"}' has timestamp too new: 2026-11-22T11:14:55Z"))
    assert isinstance(out, Rejected) and sorted(out.indices) == [0, 1] and out.reason.startswith("bad_request:")


@pytest.mark.parametrize(
    "body",
    [
        "snappy: corrupt input",
        "EOF",
        "mime: no media type",
        'Content-Encoding "br" not supported',
        "loghttp.PushRequest.Streams: []loghttp.LogProtoStream: Skip: do not know how to skip: 0, error found in #10 byte of ...",
        "",
    ],
)
def test_a_body_loki_cannot_read_blocks(body: str) -> None:
    s = sink()
    out = s.classify(one_request(s, [event("a", "2026-11-22T10:00:00Z")]), reply(400, body))
    assert isinstance(out, Blocked) and out.reason.startswith("bad_request:")


def test_structured_metadata_disallowed_blocks() -> None:
    s = sink()
    body = "stream '{job=\"edge\"}' includes structured metadata, but this feature is disallowed. Please see `limits_config.structured_metadata` ..."
    out = s.classify(one_request(s, [event("a", "2026-11-22T10:00:00Z")]), reply(400, body))
    assert isinstance(out, Blocked) and out.reason.startswith("structured_metadata_disallowed:") and "structured_metadata: []" in out.reason


def test_tenant_rate_limit_retries_without_retry_after_or_splits_a_request_over_the_limit() -> None:
    s = sink()
    req = one_request(s, [event("a", "2026-11-22T10:00:00Z"), event("b", "2026-11-22T10:00:01Z")])
    body = (
        "ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting to ingest '28' lines totaling '3168000' "
        "bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased"
    )
    out = s.classify(req, reply(429, body))
    assert isinstance(out, Retry) and out.after_s is None and out.reason.startswith("rate_limited: ingestion rate limit exceeded")
    over = body.replace("'3168000'", "'7168000'")
    assert isinstance(s.classify(req, reply(429, over)), Split)
    single = one_request(s, [event("a", "2026-11-22T10:00:00Z")])
    assert isinstance(s.classify(single, reply(429, over)), Retry)


def test_per_stream_rate_limit_retries() -> None:
    s = sink()
    req = one_request(s, [event(f"e{i}", f"2026-11-22T10:00:0{i}Z") for i in range(4)])
    entry = (
        "entry with timestamp 2026-11-22 10:00:00 +0000 UTC ignored, reason: 'Per stream rate limit exceeded (limit: 64KB/sec) while attempting "
        f"to ingest for stream '{OOO_STREAM}' totaling 61441B, consider splitting a stream via additional labels or contact your Loki "
        "administrator to see if the limit can be increased',\n"
    )
    out = s.classify(req, reply(429, entry * 4 + f"user 'fake', total ignored: 4 out of 4 for stream: {OOO_STREAM}"))
    assert isinstance(out, Retry) and out.reason.startswith("stream_rate_limited:")
    tiny = entry.replace("64KB", "100B")  # that stream's part of the request is over one second of its limit: split
    assert isinstance(s.classify(req, reply(429, tiny * 4 + f"user 'fake', total ignored: 4 out of 4 for stream: {OOO_STREAM}")), Split)


def test_500_too_large_splits_other_5xx_retry() -> None:
    s = sink()
    req = one_request(s, [event("a", "2026-11-22T10:00:00Z")])
    out = s.classify(req, reply(500, "rpc error: code = ResourceExhausted desc = grpc: received message larger than max (5121046 vs. 4194304)"))
    assert isinstance(out, Split) and out.reason.startswith("request_too_large:")
    assert isinstance(s.classify(req, reply(413, "<html>413 Request Entity Too Large</html>")), Split)
    out = s.classify(req, reply(500, "rpc error: code = Unavailable desc = connection refused"))
    assert isinstance(out, Retry) and out.reason.startswith("server_error:")
    out = s.classify(req, reply(503, "upstream connect error", {"Retry-After": "7"}))
    assert isinstance(out, Retry) and out.after_s == 7.0 and out.reason.startswith("unavailable:")


def test_retry_after_forms() -> None:
    assert retry_after({"retry-after": "2.5"}) == 2.5
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    after = retry_after({"Retry-After": when})
    assert after is not None and 25 <= after <= 31
    assert retry_after({"Retry-After": "soon"}) is None and retry_after({}) is None
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00"}) == 0.0  # no zone: read as UTC, long past


@pytest.mark.parametrize(
    ("status", "code"), [(401, "unauthorized"), (403, "forbidden"), (404, "not_found"), (405, "not_found"), (418, "http_418"), (501, "http_501")]
)
def test_access_problems_block(status: int, code: str) -> None:
    s = sink()
    out = s.classify(one_request(s, [event("a", "2026-11-22T10:00:00Z")]), reply(status, "no org id"))
    assert isinstance(out, Blocked) and reason_code(out.reason) == code


def test_transport_errors() -> None:
    s = sink()
    req = one_request(s, [event("a", "2026-11-22T10:00:00Z")])
    tls = httpx.ConnectError("handshake failed")
    tls.__context__ = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    eof = httpx.ReadError("EOF occurred in violation of protocol")
    eof.__context__ = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    outcomes = {
        "tls_eof": s.classify(req, eof),
        "connect": s.classify(req, httpx.ConnectError("[Errno 111] Connection refused")),
        "read_timeout": s.classify(req, httpx.ReadTimeout("timed out")),
        "overall_timeout": s.classify(req, TimeoutError()),
        "reset": s.classify(req, httpx.RemoteProtocolError("Server disconnected without sending a response.")),
        "tls": s.classify(req, tls),
        "tls_files": s.classify(req, TlsSetupError("cannot load the TLS files: No such file or directory")),
        "token": s.classify(req, CredentialsError("cannot read bearer_token_file /t: No such file or directory")),
    }
    assert {k: (type(v).__name__, reason_code(v.reason)) for k, v in outcomes.items()} == {  # type: ignore[union-attr]
        "tls_eof": ("Retry", "transport_error"),
        "connect": ("Retry", "connect_error"),
        "read_timeout": ("Retry", "timeout"),
        "overall_timeout": ("Retry", "timeout"),
        "reset": ("Retry", "transport_error"),
        "tls": ("Blocked", "tls_error"),
        "tls_files": ("Blocked", "tls_error"),
        "token": ("Blocked", "credentials"),
    }

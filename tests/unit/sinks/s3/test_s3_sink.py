"""Unit tests for kube_audit_shipper.sinks.s3 without a server: the sink contract (encode splits at partitions, classify),
the S3 error table, checksums and the per-object request parameters."""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import msgspec
import pytest
import zstandard
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError, SSLError

from kube_audit_shipper.delivery.contract import Blocked, Delivered, Reply, Request, Retry, Sink
from kube_audit_shipper.delivery.sink_state import SinkState
from kube_audit_shipper.demo.events import AuditEventGenerator, EventMix
from kube_audit_shipper.sinks.registry import build_sink
from kube_audit_shipper.sinks.s3.config import S3SinkConfig
from kube_audit_shipper.sinks.s3.errors import classify_error, upload_gone
from kube_audit_shipper.sinks.s3.keys import event_time
from kube_audit_shipper.sinks.s3.sink import S3Sink
from kube_audit_shipper.sinks.s3.staging import StagingFullError
from kube_audit_shipper.sinks.s3.upload import Uploader, checksum_args
from tests.support.corpus import numbered_lines
from tests.support.sink_context import context

T0 = datetime(2026, 11, 22, 9, 58, 0, tzinfo=UTC)


def make_sink(tmp: Path, **kw: object) -> S3Sink:
    cfg = msgspec.convert({"type": "s3", "name": "archive", "bucket": "audit-archive", "key_fields": {"cluster_id": "c1"}, **kw}, S3SinkConfig)
    sink = build_sink(cfg, context(tmp / "state"))
    assert isinstance(sink, S3Sink)
    return sink


def client_error(code: str, status: int, message: str = "m") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def test_it_is_a_sink(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    assert isinstance(sink, Sink) and sink.max_concurrency == 1 and sink.blocked_for_s() == 0.0
    assert sink.upload_state == "ok" and sink.upload_error is None and sink.staged_objects == 0
    assert sink.staging.dir == tmp_path / "state" / "s3" / "archive"


def test_encode_splits_a_batch_where_the_hour_changes(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    lines = list(AuditEventGenerator(seed=1, start_time=T0, mix=EventMix(events_per_second=1.0)).lines(400))  # 09:58 → ~10:04
    requests = sink.encode(lines)
    assert len(requests) == 2
    first, second = requests
    assert first.meta["partition"] == "2026|11|22|09" and second.meta["partition"] == "2026|11|22|10"
    assert list(first.indices) + list(second.indices) == list(range(400))
    assert first.meta["first_time"] == event_time(lines[0]) and second.meta["first_time"] == event_time(lines[len(first.indices)])
    assert second.meta["first_time"].hour == 10 and event_time(lines[len(first.indices) - 1]).hour == 9  # type: ignore[union-attr]
    for req in requests:
        data = zstandard.ZstdDecompressor().decompress(req.payload)
        assert data == b"".join(lines[i] + b"\n" for i in req.indices) and req.raw_bytes == len(data)
        assert req.payload[:4] == b"\x28\xb5\x2f\xfd"


def test_a_late_event_does_not_split_a_batch_back_into_the_old_hour(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)

    def ev(i: int, t: datetime) -> bytes:
        return msgspec.json.encode({"auditID": f"a{i}", "stageTimestamp": t.isoformat().replace("+00:00", "Z")})

    t = datetime(2026, 11, 22, 10, 59, 59, tzinfo=UTC)
    lines = [ev(0, t), ev(1, t + timedelta(seconds=2)), ev(2, t + timedelta(milliseconds=500)), ev(3, t + timedelta(seconds=3)), b'{"no":"time"}']
    runs = sink.runs(lines)
    assert [(a, b) for a, b, _, _ in runs] == [(0, 1), (1, 5)]  # 10:59:59.5 stays with the 11:00 run; no time: the one before


def test_gzip_frames_are_gzip_members(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, compression="gzip", key_template="a/{seq}.ndjson.gz", compression_level=6)
    lines = numbered_lines(50)
    (req,) = sink.encode(lines)
    assert zlib.decompress(req.payload, wbits=31) == b"".join(x + b"\n" for x in lines)


def test_event_field_placeholder_travels_with_the_request(tmp_path: Path) -> None:
    cfg = msgspec.convert({"type": "s3", "name": "archive", "bucket": "audit-archive"}, S3SinkConfig)
    sink = S3Sink(cfg, context(tmp_path))
    event = msgspec.json.encode({"cluster_id": "c-9", **msgspec.json.decode(numbered_lines(1)[0])})
    (req,) = sink.encode([event])
    assert req.meta["values"] == {"cluster_id": "c-9"}


def test_classify(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    req = Request(payload=b"", indices=[0])
    assert sink.classify(req, Reply(200, {}, b"")) == Delivered()
    full = sink.classify(req, StagingFullError("9 of 8 bytes staged"))
    assert isinstance(full, Retry) and full.reason.startswith("staging_full: 9 of 8 bytes staged; uploads ok")
    sink.uploader.health.set(SinkState.BLOCKED, "PutObject: AccessDenied (HTTP 403)")
    assert "uploads blocked (PutObject: AccessDenied" in sink.classify(req, StagingFullError("x")).reason  # type: ignore[union-attr]
    assert isinstance(sink.classify(req, OSError(errno.ENOSPC, "No space left on device")), Retry)
    assert isinstance(sink.classify(req, OSError(errno.EACCES, "Permission denied")), Blocked)
    assert isinstance(sink.classify(req, RuntimeError("x")), Retry)


@pytest.mark.parametrize(
    ("exc", "kind", "words"),
    [
        (client_error("SlowDown", 503), "retry", "SlowDown (HTTP 503)"),
        (client_error("ServiceUnavailable", 503), "retry", "ServiceUnavailable"),
        (client_error("InternalError", 500), "retry", "InternalError"),
        (client_error("503", 503, ""), "retry", "503"),
        (client_error("Whatever", 502), "retry", "Whatever"),
        (client_error("TooManyRequests", 429), "retry", "429"),
        (client_error("RequestTimeout", 400), "retry", "RequestTimeout"),
        (client_error("BadDigest", 400), "retry", "BadDigest"),
        (client_error("AccessDenied", 403), "blocked", "access denied"),
        (client_error("NoSuchBucket", 404), "blocked", "bucket does not exist"),
        (client_error("InvalidAccessKeyId", 403), "blocked", "access key id is not known"),
        (client_error("SignatureDoesNotMatch", 403), "blocked", "wrong secret key"),
        (client_error("AuthorizationHeaderMalformed", 400), "blocked", "region"),
        (client_error("KMS.DisabledException", 400), "blocked", "KMS key"),
        (client_error("InvalidArgument", 400), "blocked", "InvalidArgument"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "retry", "EndpointConnectionError"),
        (ReadTimeoutError(endpoint_url="http://x"), "retry", "ReadTimeoutError"),
        (aiohttp.ServerDisconnectedError(), "retry", "ServerDisconnectedError"),
        (TimeoutError(), "retry", "TimeoutError"),
        (NoCredentialsError(), "blocked", "no usable credentials"),
        (SSLError(endpoint_url="https://x", error="bad cert"), "blocked", "TLS"),
    ],
)
def test_s3_error_table(exc: BaseException, kind: str, words: str) -> None:
    got = classify_error(exc)
    assert isinstance(got, {"retry": Retry, "blocked": Blocked}[kind]) and words in got.reason, got
    assert upload_gone(exc) is None


def test_a_multipart_upload_gone_is_no_failure_but_a_restart() -> None:
    assert (
        upload_gone(client_error("NoSuchUpload", 404, "The specified upload does not exist")) == "NoSuchUpload (HTTP 404): The specified upload does not exist"
    )


def test_unknown_exceptions_are_not_classified() -> None:
    assert classify_error(ValueError("bug")) is None


def test_checksums_are_what_s3_expects() -> None:
    body = b"hello\n" * 1000
    assert checksum_args("md5", body) == {"ContentMD5": base64.b64encode(hashlib.md5(body).digest()).decode()}
    assert checksum_args("crc32", body) == {"ChecksumCRC32": base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()}
    assert checksum_args("sha256", body) == {"ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode()}


def test_object_parameters_carry_sse_storage_class_and_tags() -> None:
    cfg = msgspec.convert(
        {
            "type": "s3",
            "name": "a",
            "bucket": "bkt",
            "sse": "aws:kms",
            "sse_kms_key_id": "alias/k",
            "storage_class": "STANDARD_IA",
            "tags": {"a b": "c/d", "t": "1"},
        },
        S3SinkConfig,
    )
    args = Uploader(cfg, sink_name="a").object_args
    assert args == {
        "ContentType": "application/zstd",
        "StorageClass": "STANDARD_IA",
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/k",
        "Tagging": "a+b=c%2Fd&t=1",
    }


def test_staged_frames_decompress_with_the_standard_reader(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    lines = numbered_lines(120)
    frames = b"".join(r.payload for i in range(0, 120, 40) for r in sink.encode(lines[i : i + 40]))
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(frames), read_across_frames=True).read().splitlines() == lines

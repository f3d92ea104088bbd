"""How the SLS sink reads every answer the issue lists, through the delivery engine's outcomes.

Each answer arrives as the engine gets it: `send` (one signed PutLogs, answered here by a scripted HTTP client
instead of a server), then `classify`. What the sink learns from an answer (error counters, the server's
clock, stale credentials) it learns in `send`; `classify` only reads, and says the same thing every time."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import httpx
import msgspec
import pytest

from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Rejected, Reply, Request, Retry, Split
from kube_audit_shipper.sinks.sls.config import SlsSinkConfig
from kube_audit_shipper.sinks.sls.sink import SlsSink
from tests.support.sink_context import ScriptedHttp, Sent, context

SECRET = "THE-SECRET-VALUE"


def sink(answer: Reply | BaseException, http: ScriptedHttp | None = None) -> SlsSink:
    cfg = msgspec.convert(
        {
            "name": "sls",
            "type": "sls",
            "endpoint": "cn-hangzhou.log.aliyuncs.com",
            "project": "k8s-log-c0123",
            "logstore": "audit-c0123",
            "access_key_id": "LTAIkey",
            "access_key_secret": SECRET,
            "source": "10.0.0.1",
        },
        SlsSinkConfig,
    )
    return SlsSink(cfg, context("/var/lib/kas", node="n", http=http or ScriptedHttp(lambda sent: answer)))


def attempt(s: SlsSink, request: Request) -> tuple[Reply | BaseException, Outcome]:
    """One attempt as the engine makes it: send, then classify what it returned or raised."""
    try:
        result: Reply | BaseException = asyncio.run(s.send(request))
    except Exception as exc:  # a transport error: classify decides
        result = exc
    outcome = s.classify(request, result)
    assert s.classify(request, result) == outcome  # the same answer means the same, every time
    return result, outcome


def reply(status: int, code: str | None, message: str = "msg", **headers: str) -> Reply:
    body = json.dumps({"errorCode": code, "errorMessage": message}).encode() if code else b"<html>bad gateway</html>"
    return Reply(status, {"x-log-requestid": "REQ123", **headers}, body)


def req(n: int = 4) -> Request:
    return Request(payload=b"", indices=list(range(n)))


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (503, "ServerBusy", Retry),
        (500, "InternalServerError", Retry),
        (403, "WriteQuotaExceed", Retry),
        (403, "ShardWriteQuotaExceed", Retry),
        (502, None, Retry),  # a proxy's 5xx without an SLS body
        (429, "TooManyRequests", Retry),
        (401, "Unauthorized", Blocked),
        (401, "SignatureNotMatch", Blocked),
        (401, "InvalidAccessKeyId", Blocked),
        (401, "SecurityToken.Expired", Blocked),
        (403, "ProjectForbidden", Blocked),
        (404, "ProjectNotExist", Blocked),
        (404, "LogStoreNotExist", Blocked),
        (400, "ParameterInvalid", Blocked),
        (400, "PostBodyUncompressError", Blocked),
        (400, "PostBodyTooLarge", Split),
        (413, None, Split),
        (400, "InvalidKey", Split),  # bisect to the bad log
    ],
)
def test_error_codes(status: int, code: str | None, outcome: type) -> None:
    s = sink(reply(status, code))
    _, got = attempt(s, req())
    assert isinstance(got, outcome), got
    reason = got.reason  # type: ignore[union-attr]
    assert "REQ123" in reason and (code or "") in reason and SECRET not in reason
    if outcome is Blocked:
        assert "k8s-log-c0123" in reason and "audit-c0123" in reason
    if code in ("Unauthorized", "SignatureNotMatch", "InvalidAccessKeyId", "SecurityToken.Expired"):
        assert "LTAIkey" in reason and "access_key_id/access_key_secret in the config" in reason
    assert s.error_codes[code or ("InternalServerError" if status >= 500 else "BadResponse")] == 1
    assert s.last_request_id == "REQ123"


def test_a_single_bad_log_is_rejected_alone() -> None:
    _, got = attempt(sink(reply(400, "InvalidEncoding")), req(1))
    assert isinstance(got, Rejected) and list(got.indices) == [0] and "InvalidEncoding" in got.reason


def test_a_single_log_too_large_is_sent_again_at_metadata_level_and_a_bad_one_is_not() -> None:
    s = sink(reply(400, "PostBodyTooLarge"))
    records = [json.dumps({"auditID": "a", "level": "RequestResponse", "stage": "ResponseComplete", "requestObject": {"k": "v"}}).encode()]
    (request,) = s.encode(records)
    _, got = attempt(s, request)
    assert isinstance(got, Split)
    (minimal,) = s.split(request, records)
    assert minimal.meta["minimal"] and list(minimal.indices) == [0]
    bad = sink(reply(400, "InvalidKey"))
    (request,) = bad.encode(records + records)
    _, got = attempt(bad, request)
    assert isinstance(got, Split) and len(bad.split(request, records + records)) == 2  # bisected
    (one,) = bad.split(request, records + records)[:1]
    assert bad.split(one, records + records) == []  # a single bad log is not re-encoded: the engine dead-letters it


def test_success_and_request_id() -> None:
    s = sink(Reply(200, {"x-log-requestid": "OK1"}, b""))
    assert isinstance(attempt(s, req())[1], Delivered)
    assert s.last_request_id == "OK1"


@pytest.mark.parametrize(
    "headers",
    [{"date": "Sun, 22 Nov 2099 00:00:00 GMT"}, {"x-log-time": "4098729600"}],
)
def test_request_time_expired_learns_the_server_clock(headers: dict[str, str]) -> None:
    s = sink(Reply(400, headers, json.dumps({"errorCode": "RequestTimeExpired", "errorMessage": "expired"}).encode()))
    _, got = attempt(s, req())
    assert isinstance(got, Retry) and got.after_s == 0.0
    assert s.client.clock_offset_s > 70 * 365 * 86400 and s.clock_adjustments == 1
    assert s.client.now() > 4_000_000_000


def test_the_next_attempt_is_signed_with_the_learned_clock() -> None:
    answers = [Reply(400, {"x-log-time": "4098729600"}, json.dumps({"errorCode": "RequestTimeExpired", "errorMessage": "expired"}).encode())]
    answers.append(Reply(200, {}, b""))
    http = ScriptedHttp(lambda sent: answers.pop(0))
    cfg = msgspec.convert(
        {
            "name": "sls",
            "type": "sls",
            "endpoint": "cn-hangzhou.log.aliyuncs.com",
            "project": "p-1x",
            "logstore": "l-1x",
            "access_key_id": "a",
            "access_key_secret": "b",
        },
        SlsSinkConfig,
    )
    s = SlsSink(cfg, context("/var/lib/kas", http=http))
    assert isinstance(attempt(s, req())[1], Retry) and isinstance(attempt(s, req())[1], Delivered)
    first, second = (sent.headers["Date"] for sent in http.sent)
    assert first.endswith("GMT") and "2099" in second and "2099" not in first


@pytest.mark.parametrize(
    ("exc", "outcome", "code"),
    [
        (httpx.ConnectError("refused"), Retry, "NetworkError"),
        (httpx.ReadTimeout("slow"), Retry, "NetworkError"),
        (httpx.RemoteProtocolError("reset"), Retry, "NetworkError"),
        (ConnectionResetError(), Retry, "NetworkError"),
        (RuntimeError("client bug"), Retry, "ClientError"),
    ],
)
def test_transport_errors_retry(exc: BaseException, outcome: type, code: str) -> None:
    s = sink(exc)
    assert isinstance(attempt(s, req())[1], outcome)
    assert s.error_codes == {code: 1}


def test_tls_errors_block() -> None:
    try:
        raise httpx.ConnectError("tls") from ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    except httpx.ConnectError as exc:
        error = exc
    s = sink(error)
    got: Any = attempt(s, req())[1]
    assert isinstance(got, Blocked) and "TLS" in got.reason and "tls.ca_file" in got.reason
    assert s.error_codes == {"TLSError": 1}


def test_every_request_is_signed_and_goes_to_the_project_host() -> None:
    http = ScriptedHttp(lambda sent: Reply(200, {}, b""))
    attempt(sink(Reply(200, {}, b""), http), req())
    (sent,) = http.sent
    assert isinstance(sent, Sent) and sent.method == "POST"
    assert sent.url == "https://k8s-log-c0123.cn-hangzhou.log.aliyuncs.com/logstores/audit-c0123/shards/lb"
    assert sent.headers["Authorization"].startswith("LOG LTAIkey:") and SECRET not in sent.headers["Authorization"]

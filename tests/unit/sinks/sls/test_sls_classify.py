"""How the SLS sink reads every answer the issue lists, through the delivery engine's outcomes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import msgspec
import pytest

from kube_audit_shipper.delivery.contract import Blocked, Delivered, Rejected, Reply, Request, Retry, Split
from kube_audit_shipper.sinks.sls.config import SlsSinkConfig
from kube_audit_shipper.sinks.sls.sink import SlsSink

SECRET = "THE-SECRET-VALUE"


def sink() -> SlsSink:
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
    return SlsSink(cfg, node="n")


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
    s = sink()
    got = s.classify(req(), reply(status, code))
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
    got = sink().classify(req(1), reply(400, "InvalidEncoding"))
    assert isinstance(got, Rejected) and list(got.indices) == [0] and "InvalidEncoding" in got.reason


def test_success_and_request_id() -> None:
    s = sink()
    assert isinstance(s.classify(req(), Reply(200, {"x-log-requestid": "OK1"}, b"")), Delivered)
    assert s.last_request_id == "OK1"


@pytest.mark.parametrize(
    "headers",
    [{"date": "Sun, 22 Nov 2099 00:00:00 GMT"}, {"x-log-time": "4098729600"}],
)
def test_request_time_expired_learns_the_server_clock(headers: dict[str, str]) -> None:
    s = sink()
    got = s.classify(req(), Reply(400, headers, json.dumps({"errorCode": "RequestTimeExpired", "errorMessage": "expired"}).encode()))
    assert isinstance(got, Retry) and got.after_s == 0.0
    assert s.client.clock_offset_s > 70 * 365 * 86400
    assert s.client.now() > 4_000_000_000


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (httpx.ConnectError("refused"), Retry),
        (httpx.ReadTimeout("slow"), Retry),
        (httpx.RemoteProtocolError("reset"), Retry),
        (ConnectionResetError(), Retry),
    ],
)
def test_transport_errors_retry(exc: BaseException, outcome: type) -> None:
    assert isinstance(sink().classify(req(), exc), outcome)


def test_tls_errors_block() -> None:
    import ssl

    try:
        raise httpx.ConnectError("tls") from ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    except httpx.ConnectError as exc:
        got: Any = sink().classify(req(), exc)
    assert isinstance(got, Blocked) and "TLS" in got.reason and "ca_file" in got.reason

"""alertmanager/replies.py on Alertmanager's answers, verbatim from a real Alertmanager 0.25 (and 0.27+ for 410)."""

from __future__ import annotations

import ssl

import httpx
import pytest

from kube_audit_shipper.delivery.contract import Blocked, Delivered, Rejected, Reply, Request, Retry, Split
from kube_audit_shipper.sinks.alertmanager import replies
from kube_audit_shipper.sinks.alertmanager.config import AlertmanagerTargetConfig
from kube_audit_shipper.sinks.alertmanager.encode import AlertmanagerEncoder
from kube_audit_shipper.sinks.http.client import CredentialsError, TlsSetupError
from tests.unit.sinks.alerts.alerts import exec_alert, records

JSON = {"Content-Type": "application/json"}
ENC = AlertmanagerEncoder(AlertmanagerTargetConfig(name="am", url="http://am:9093"), node="cp-1")
ONE = ENC.encode(records([exec_alert(1)]))[0]
THREE = ENC.encode(records([exec_alert(1), exec_alert(2), exec_alert(3)]))[0]


def reply(status: int, body: str | bytes = b"", headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, headers or JSON, body.encode() if isinstance(body, str) else body)


@pytest.mark.parametrize(
    ("request_", "answer", "want", "reason"),
    [
        (ONE, reply(200), Delivered, None),
        # validation: a JSON string, the valid alerts of the request stored
        (
            ONE,
            reply(400, '"start time must be before end time; invalid label set: invalid name \\"0bad\\""\n'),
            Rejected,
            'refused: HTTP 400: start time must be before end time; invalid label set: invalid name "0bad"',
        ),
        (THREE, reply(400, '"at least one label pair required"\n'), Split, "refused: HTTP 400: at least one label pair required (isolating the refused alert)"),
        # the API layer's schema check: nothing stored
        (
            ONE,
            reply(422, '{"code":601,"message":"0.generatorURL in body must be of type uri: \\"not a url\\""}'),
            Rejected,
            'refused: HTTP 422: 0.generatorURL in body must be of type uri: "not a url"',
        ),
        (THREE, reply(422, '{"code":602,"message":"0.labels in body is required"}'), Split, None),
        (
            ONE,
            reply(
                400,
                '{"code":400,"message":"parsing alerts body from \\"\\" failed, because json: cannot unmarshal object into Go value of type models.PostableAlerts"}',
            ),
            Blocked,
            None,
        ),
        (
            ONE,
            reply(415, '{"code":415,"message":"unsupported media type \\"text/plain\\", only [application/json] are allowed"}'),
            Blocked,
            'unsupported_media_type: HTTP 415: unsupported media type "text/plain", only [application/json] are allowed',
        ),
        (ONE, reply(410, "Gone\n", {"Content-Type": "text/plain"}), Blocked, None),
        (ONE, reply(401, "Unauthorized\n"), Blocked, "unauthorized: HTTP 401: Unauthorized (check basic_auth, bearer_token or bearer_token_file)"),
        (ONE, reply(403, "Forbidden"), Blocked, "forbidden: HTTP 403: Forbidden"),
        (ONE, reply(404, "404 page not found\n"), Blocked, "not_found: HTTP 404: 404 page not found (check url and the route prefix)"),
        (THREE, reply(413, "<html>413 Request Entity Too Large</html>"), Split, None),
        (ONE, reply(429, "slow down", {"Retry-After": "7"}), Retry, None),
        (ONE, reply(500, '{"code":500,"message":"failed to create alerts"}'), Retry, "unavailable: HTTP 500: failed to create alerts"),
        (ONE, reply(503, "upstream connect error", {"Retry-After": "2"}), Retry, None),
        (ONE, reply(418, "teapot"), Blocked, "http_418: teapot"),
    ],
)
def test_answers(request_: Request, answer: Reply, want: type, reason: str | None) -> None:
    outcome = replies.classify(request_, answer)
    assert isinstance(outcome, want)
    if reason is not None:
        assert getattr(outcome, "reason", None) == reason
    if isinstance(outcome, Rejected):
        assert list(outcome.indices) == list(request_.indices) and not outcome.retry_rest


def test_retry_after_is_honoured_and_410_explains_api_v1() -> None:
    assert replies.classify(ONE, reply(429, "", {"Retry-After": "7"})) == Retry("rate_limited: HTTP 429: ", 7.0)
    gone = replies.classify(ONE, reply(410, "Gone"))
    assert isinstance(gone, Blocked) and "API v1 was removed in 0.27" in gone.reason and "/api/v2/alerts" in gone.reason


@pytest.mark.parametrize(
    ("exc", "want", "start"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), Retry, "connect_error:"),
        (httpx.ReadTimeout("timed out"), Retry, "timeout:"),
        (TimeoutError(), Retry, "timeout:"),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), Retry, "transport_error:"),
        (CredentialsError("cannot read bearer_token_file /x: No such file"), Blocked, "credentials:"),
        (TlsSetupError("cannot load the TLS files"), Blocked, "tls_error:"),
        (httpx.ConnectError("tls"), Retry, "connect_error:"),
    ],
)
def test_transport_errors(exc: BaseException, want: type, start: str) -> None:
    outcome = replies.classify(ONE, exc)
    assert isinstance(outcome, want) and outcome.reason.startswith(start)  # type: ignore[union-attr]


def test_a_certificate_error_blocks() -> None:
    err = httpx.ConnectError("certificate verify failed")
    err.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed: unable to get local issuer certificate")
    outcome = replies.classify(ONE, err)
    assert isinstance(outcome, Blocked) and outcome.reason.startswith("tls_error:")

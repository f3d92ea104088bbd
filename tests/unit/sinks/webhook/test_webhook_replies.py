"""webhook/replies.py: a receiver's answers (2xx delivered, 408/429/5xx retried, credentials and missing endpoints
block, other 4xx refuse the message), and the token file the HTTP client reads."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from kube_audit_shipper.delivery.contract import Blocked, Delivered, Rejected, Reply, Retry, Split
from kube_audit_shipper.sinks.http.client import CredentialsError, TokenFile
from kube_audit_shipper.sinks.webhook import replies
from kube_audit_shipper.sinks.webhook.config import WebhookTargetConfig
from kube_audit_shipper.sinks.webhook.encode import WebhookEncoder
from tests.unit.sinks.alerts.alerts import exec_alert, records

ENC = WebhookEncoder(WebhookTargetConfig(name="w", url="http://x/hook"), node="cp-1")
ONE = ENC.encode(records([exec_alert(1)]))[0]
MANY = ENC.encode(records([exec_alert(1), exec_alert(2)]))[0]


@pytest.mark.parametrize(
    ("status", "request_", "want"),
    [
        (200, ONE, Delivered),
        (202, ONE, Delivered),
        (204, ONE, Delivered),
        (408, ONE, Retry),
        (429, ONE, Retry),
        (500, ONE, Retry),
        (503, ONE, Retry),
        (413, MANY, Split),
        (401, ONE, Blocked),
        (403, ONE, Blocked),
        (404, ONE, Blocked),
        (405, ONE, Blocked),
        (410, ONE, Blocked),
        (400, ONE, Rejected),
        (422, ONE, Rejected),
        (400, MANY, Split),
        (422, MANY, Split),
        (302, ONE, Blocked),
    ],
)
def test_answers(status: int, request_: object, want: type) -> None:
    outcome = replies.classify(request_, Reply(status, {"Retry-After": "5"}, b"receiver says no"))  # type: ignore[arg-type]
    assert isinstance(outcome, want)
    if isinstance(outcome, Retry):
        assert outcome.after_s == 5.0
    if isinstance(outcome, Rejected):
        assert outcome.reason == f"refused: HTTP {status}: receiver says no" and list(outcome.indices) == [0]


def test_transport_and_credentials() -> None:
    assert isinstance(replies.classify(ONE, httpx.ConnectError("refused")), Retry)
    assert isinstance(replies.classify(ONE, CredentialsError("cannot read bearer_token_file /x")), Blocked)


def test_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    token = TokenFile(str(path))
    assert token.read() == "first"
    path.write_text("second-token\n")
    os.utime(path, ns=(1, 2))
    assert token.read() == "second-token"
    path.write_text("   \n")
    with pytest.raises(CredentialsError, match="is empty"):
        token.read()
    path.unlink()
    with pytest.raises(CredentialsError, match="cannot read bearer_token_file"):
        token.read()

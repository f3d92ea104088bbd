"""slack/replies.py on Slack's incoming-webhook answers (status and text code, as hooks.slack.com gives them)."""

from __future__ import annotations

import httpx
import pytest

from kube_audit_shipper.delivery.contract import Blocked, Delivered, Rejected, Reply, Retry, Split
from kube_audit_shipper.sinks.http.throttle import LocalThrottle
from kube_audit_shipper.sinks.slack import replies
from kube_audit_shipper.sinks.slack.config import SlackTargetConfig
from kube_audit_shipper.sinks.slack.encode import BlocksEncoder
from kube_audit_shipper.sinks.slack.sink import SlackSink
from tests.support.sink_context import context
from tests.unit.sinks.alerts.alerts import exec_alert, records

SECRET_URL = "https://hooks.slack.com/services/T0/B0/secretpart"
ENC = BlocksEncoder(SlackTargetConfig(name="s", webhook_url=SECRET_URL), node="cp-1")
ONE = ENC.encode(records([exec_alert(1)]))[0]
MANY = ENC.encode(records([exec_alert(1), exec_alert(2)]))[0]


@pytest.mark.parametrize(
    ("status", "text", "request_", "want"),
    [
        (200, "ok", ONE, Delivered),
        (400, "invalid_blocks", ONE, Rejected),
        (400, "invalid_blocks", MANY, Split),
        (400, "invalid_payload", ONE, Rejected),
        (400, "no_text", ONE, Rejected),
        (400, "invalid_blocks_format", MANY, Split),
        (403, "invalid_token", ONE, Blocked),
        (404, "no_service", ONE, Blocked),
        (404, "channel_not_found", ONE, Blocked),
        (410, "channel_is_archived", ONE, Blocked),
        (403, "action_prohibited", ONE, Blocked),
        (403, "posting_to_general_channel_denied", ONE, Blocked),
        (400, "user_not_found", ONE, Blocked),
        (404, "no_team", ONE, Blocked),
        (403, "team_disabled", ONE, Blocked),
        (413, "", MANY, Split),
        (500, "rollup_error", ONE, Retry),
        (502, "", ONE, Retry),
        (408, "", ONE, Retry),
        (403, "", ONE, Blocked),
    ],
)
def test_answers(status: int, text: str, request_: object, want: type) -> None:
    outcome = replies.classify(request_, Reply(status, {"Content-Type": "text/html"}, text.encode()))  # type: ignore[arg-type]
    assert isinstance(outcome, want)
    if isinstance(outcome, Rejected):
        assert outcome.reason == f"refused: HTTP {status}: {text}"
    if isinstance(outcome, Blocked) and text:
        assert outcome.reason.startswith(text)


def test_rate_limits_wait_as_told() -> None:
    assert replies.classify(ONE, Reply(429, {"Retry-After": "30"}, b"rate_limited")) == Retry("rate_limited: HTTP 429: rate_limited", 30.0)
    assert replies.classify(ONE, Reply(429, {}, b"rate_limited")).after_s == 1.0  # type: ignore[union-attr]
    assert replies.classify(ONE, LocalThrottle(0.8, "at most 1 messages per 1 s")).after_s == 0.8  # type: ignore[union-attr]


def test_no_reason_carries_the_webhook_url() -> None:
    for result in (httpx.ConnectError("All connection attempts failed"), Reply(404, {}, b"no_service"), Reply(500, {}, b"x")):
        outcome = replies.classify(ONE, result)
        assert "secretpart" not in outcome.reason  # type: ignore[union-attr]


def test_a_transport_error_quoting_the_url_is_masked() -> None:
    sink = SlackSink(SlackTargetConfig(name="s", webhook_url=SECRET_URL), context("/var/lib/kas"))
    outcome = sink.classify(ONE, httpx.UnsupportedProtocol(f"Request URL {SECRET_URL} is not supported"))
    assert isinstance(outcome, Retry) and "secretpart" not in outcome.reason and "***" in outcome.reason

"""What Slack's answer to an incoming-webhook POST means. Slack answers a short text code in the body:

200 "ok"                                          Delivered
429 (Retry-After)                                 Retry after Retry-After (and `send` sends nothing until then)
400 invalid_blocks, invalid_blocks_format, invalid_payload, no_text, missing_text_or_fallback_or_attachments,
    too_many_attachments, msg_too_long           the message was refused: one alert: Rejected with the code;
                                                  several: Split until the refused one is alone
403/404/410 no_service, no_service_id, no_team, invalid_token, team_disabled, channel_not_found,
    channel_is_archived, action_prohibited, posting_to_general_channel_denied, user_not_found
                                                  Blocked: the webhook is gone or may not post (data kept)
413                                               Split
408, 5xx (rollup_error), transport                Retry
other 4xx                                         Blocked
LocalThrottle                                     Retry after the wait the target's own rate limit computed
"""

from __future__ import annotations

from kube_audit_shipper.delivery.answers import retry_after
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Rejected, Reply, Request, Retry, Split
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.http.client import body_text, transport_outcome
from kube_audit_shipper.sinks.http.throttle import LocalThrottle

REFUSED = frozenset(
    {
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_payload",
        "no_text",
        "missing_text_or_fallback_or_attachments",
        "too_many_attachments",
        "msg_too_long",
    }
)
UNUSABLE = frozenset(
    {
        "no_service",
        "no_service_id",
        "no_team",
        "invalid_token",
        "team_disabled",
        "channel_not_found",
        "channel_is_archived",
        "action_prohibited",
        "posting_to_general_channel_denied",
        "user_not_found",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
    }
)
DEFAULT_RATE_LIMIT_WAIT_S = 1.0


def classify(request: Request, result: Reply | BaseException) -> Outcome:
    invalid = alert_format.invalid_outcome(request, result)
    if invalid is not None:
        return invalid
    if isinstance(result, LocalThrottle):
        return Retry(f"local_rate_limit: {result}", result.after_s)
    if isinstance(result, BaseException):
        return transport_outcome(result)
    status = result.status
    text = body_text(result.body)
    code = text.split()[0] if text else ""
    if 200 <= status < 300:
        return Delivered()
    if status == 429:
        after = retry_after(result.headers)
        return Retry(f"rate_limited: HTTP 429: {text}", DEFAULT_RATE_LIMIT_WAIT_S if after is None else after)
    if code in UNUSABLE:
        return Blocked(f"{code}: HTTP {status}: the webhook cannot post (removed, revoked, or its channel is gone): check webhook_url")
    if code in REFUSED or (status == 400 and code):
        if len(request.meta.get("items", ())) > 1:
            return Split(f"refused: HTTP {status}: {text} (isolating the refused alert)")
        return Rejected(f"refused: HTTP {status}: {text}", list(request.indices))
    if status == 413:
        return Split(f"request_too_large: HTTP 413: {text}")
    if status == 408 or status >= 500:
        return Retry(f"unavailable: HTTP {status}: {text}", retry_after(result.headers))
    if status in (401, 403, 404, 410):
        return Blocked(f"http_{status}: {text} (check webhook_url)")
    return Blocked(f"http_{status}: {text}")

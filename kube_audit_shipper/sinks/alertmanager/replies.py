"""What Alertmanager's answer to `POST /api/v2/alerts` means (answers as Alertmanager 0.25–0.28 gives them).

200                         Delivered
400 "<validation errors>"   (a JSON string: Alertmanager stored the valid alerts of the request and lists the
                            errors of the others, without saying which) one alert: Rejected with the text;
                            several: Split until the refused one is alone (sending the stored ones again only
                            updates them: Alertmanager deduplicates on the label set)
422 {"code":6xx,...}        the body broke the API schema (nothing stored): as 400
400 {"code":400,"message":"parsing alerts body ..."}   the body is unreadable to this server: Blocked
415                         Content-Type refused (a proxy rewrote it): Blocked
410                         Gone: the API v1 path, removed in Alertmanager 0.27: Blocked with that explanation
401, 403, 407               credentials: Blocked
404, 405                    wrong url or route prefix: Blocked
413                         Split (a proxy's body limit)
408, 429, 5xx, transport    Retry (with Retry-After when a proxy gives one)
other 4xx                   Blocked (data kept)
"""

from __future__ import annotations

import msgspec

from kube_audit_shipper.delivery.answers import retry_after
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Rejected, Reply, Request, Retry, Split
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.http.client import body_text, short, transport_outcome


def classify(request: Request, result: Reply | BaseException) -> Outcome:
    invalid = alert_format.invalid_outcome(request, result)
    if invalid is not None:
        return invalid
    if isinstance(result, BaseException):
        return transport_outcome(result)
    status = result.status
    if 200 <= status < 300:
        return Delivered()
    text = _message(result.body)
    if status in (400, 422):
        if "parsing alerts body" in text:
            return Blocked(f"unreadable_body: HTTP {status}: {text}")
        if len(request.meta.get("alerts", ())) > 1:
            return Split(f"refused: HTTP {status}: {text} (isolating the refused alert)")
        return Rejected(f"refused: HTTP {status}: {text}", list(request.indices))
    if status == 410:
        return Blocked(
            f"gone: HTTP 410: {text} (Alertmanager API v1 was removed in 0.27 and this target posts to /api/v2/alerts: "
            "check url and any proxy that rewrites the path)"
        )
    if status == 415:
        return Blocked(f"unsupported_media_type: HTTP 415: {text}")
    if status in (401, 407):
        return Blocked(f"unauthorized: HTTP {status}: {text} (check basic_auth, bearer_token or bearer_token_file)")
    if status == 403:
        return Blocked(f"forbidden: HTTP 403: {text}")
    if status in (404, 405):
        return Blocked(f"not_found: HTTP {status}: {text} (check url and the route prefix)")
    if status == 413:
        return Split(f"request_too_large: HTTP 413: {text}")
    if status in (408, 429) or status >= 500:
        return Retry(f"{'rate_limited' if status == 429 else 'unavailable'}: HTTP {status}: {text}", retry_after(result.headers))
    return Blocked(f"http_{status}: {text}")


def _message(body: bytes) -> str:
    """Alertmanager's error text: a JSON string (validation), or {"code", "message"} (the API layer), else the body."""
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body_text(body)
    if isinstance(value, str):
        return short(value)
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return short(value["message"])
    return body_text(body)

"""What a webhook receiver's answer means. Alertmanager's own webhook notifier retries 5xx and gives up on any 4xx;
this target keeps that for what a receiver refuses, but keeps the data when the receiver cannot be reached
or will not let us in (the agent's rule for credentials and missing endpoints: block, don't drop):

    2xx                          Delivered
    408, 429, 5xx, transport     Retry (Retry-After honoured)
    413                          Split
    401, 403, 407                Blocked (credentials)
    404, 405, 410                Blocked (check url)
    other 4xx                    the receiver refused the message: one alert: Rejected with the answer;
                                 several: Split until the refused one is alone
"""

from __future__ import annotations

from kube_audit_shipper.delivery.answers import retry_after
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Rejected, Reply, Request, Retry, Split
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.http.client import body_text, transport_outcome


def classify(request: Request, result: Reply | BaseException) -> Outcome:
    invalid = alert_format.invalid_outcome(request, result)
    if invalid is not None:
        return invalid
    if isinstance(result, BaseException):
        return transport_outcome(result)
    status = result.status
    if 200 <= status < 300:
        return Delivered()
    text = body_text(result.body)
    if status in (408, 429) or status >= 500:
        return Retry(f"{'rate_limited' if status == 429 else 'unavailable'}: HTTP {status}: {text}", retry_after(result.headers))
    if status == 413:
        return Split(f"request_too_large: HTTP 413: {text}")
    if status in (401, 403, 407):
        return Blocked(f"unauthorized: HTTP {status}: {text} (check basic_auth, bearer_token, bearer_token_file or headers)")
    if status in (404, 405, 410):
        return Blocked(f"not_found: HTTP {status}: {text} (check url)")
    if 400 <= status < 500:
        if len(request.meta.get("alerts", ())) > 1:
            return Split(f"refused: HTTP {status}: {text} (isolating the refused alert)")
        return Rejected(f"refused: HTTP {status}: {text}", list(request.indices))
    return Blocked(f"http_{status}: {text}")

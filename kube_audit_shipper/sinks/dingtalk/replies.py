"""What DingTalk's answer means. DingTalk answers HTTP 200 with `{"errcode": N, "errmsg": "..."}` for success and for
most failures alike, so the errcode decides (codes from DingTalk's robot documentation and error table, and
answers observed from oapi.dingtalk.com):

    0                                Delivered
    130101, 410100 ("send too fast") Retry after throttle_pause_s (the robot is throttled for 10 minutes;
                                     `send` also stops every message for that long)
    -1 (system busy)                 Retry
    310000 keywords not in content   Blocked: the robot's keyword must be in `title`
    310000 sign not match            Blocked: wrong `secret`
    310000 invalid timestamp         Blocked: this node's clock is over an hour off
    310000 ip ... not in whitelist   Blocked: the robot's IP allow-list
    300001, 300005, 400101 (token is not exist), 400102 (robot stopped), 400106 (robot not found),
    400013 (group dissolved)         Blocked: the robot is gone or the access_token is wrong
    40035 (missing parameter), 43002 (POST required), 43004 (Content-Type), 400105 (unknown msgtype)
                                     Blocked: the request is not what this endpoint takes (check url; data kept)
    460101 / "message too long"      Split
    any other errcode                the message was refused: one alert: Rejected with errcode and errmsg;
                                     several: Split until the refused one is alone
    HTTP 408, 429, 5xx, transport    Retry;   other HTTP statuses, or a 200 that is no DingTalk answer: Blocked
    LocalThrottle                    Retry after the wait the target's own rate limit computed
"""

from __future__ import annotations

from typing import Any

import msgspec

from kube_audit_shipper.delivery.answers import retry_after
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Rejected, Reply, Request, Retry, Split
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.http.client import body_text, short, transport_outcome
from kube_audit_shipper.sinks.http.throttle import LocalThrottle

THROTTLED = frozenset({130101, 410100})
BUSY = frozenset({-1})
GONE = {
    300001: "the access_token is not a robot's",
    300005: "the access_token is not a robot's",
    400101: "the access_token is not a robot's",
    400102: "the robot is stopped",
    400106: "the robot does not exist",
    400013: "the robot's group was dissolved",
}
UNREADABLE = frozenset({40035, 43002, 43004, 400105})
TOO_LONG = frozenset({460101})


def errcode(body: bytes) -> tuple[int, str] | None:
    """(errcode, errmsg) of a DingTalk answer, or None when the body is not one."""
    try:
        value: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("errcode"), int) or isinstance(value.get("errcode"), bool):
        return None
    return value["errcode"], str(value.get("errmsg", ""))


def classify(request: Request, result: Reply | BaseException, *, throttle_pause_s: float) -> Outcome:
    invalid = alert_format.invalid_outcome(request, result)
    if invalid is not None:
        return invalid
    if isinstance(result, LocalThrottle):
        return Retry(f"local_rate_limit: {result}", result.after_s)
    if isinstance(result, BaseException):
        return transport_outcome(result)
    status = result.status
    if status != 200:
        text = body_text(result.body)
        if status in (408, 429) or status >= 500:
            return Retry(f"unavailable: HTTP {status}: {text}", retry_after(result.headers))
        return Blocked(f"http_{status}: {text} (check url)")
    answer = errcode(result.body)
    if answer is None:
        return Blocked(f"unexpected_answer: HTTP 200 without errcode: {body_text(result.body)} (check url: it is not DingTalk's robot API)")
    code, message = answer
    said = f"errcode {code}: {short(message)}"
    several = len(request.meta.get("items", ())) > 1
    if code == 0:
        return Delivered()
    if code in THROTTLED or "too fast" in message:
        return Retry(f"throttled: {said} (DingTalk throttles a robot for 10 minutes)", throttle_pause_s)
    if code in BUSY:
        return Retry(f"busy: {said}")
    if code == 310000:
        return Blocked(f"security_check: {said} ({_security_hint(message)})")
    if code in GONE:
        return Blocked(f"robot_unavailable: {said} ({GONE[code]}: check access_token and the robot in the group)")
    if code in UNREADABLE:
        return Blocked(f"request_refused: {said} (the endpoint does not take this request: check url)")
    if code in TOO_LONG or "too long" in message:
        return Split(f"message_too_long: {said}")
    if several:
        return Split(f"refused: {said} (isolating the refused alert)")
    return Rejected(f"refused: {said}", list(request.indices))


def _security_hint(message: str) -> str:
    lower = message.lower()
    if "keyword" in lower:
        return "the robot requires a keyword: put it in `title`"
    if "sign" in lower:
        return "the signature is wrong: check `secret`"
    if "timestamp" in lower:
        return "DingTalk refuses a timestamp more than an hour from its clock: check this node's clock"
    if "whitelist" in lower or "ip" in lower:
        return "this node's address is not in the robot's IP allow-list"
    return "check the robot's security settings"

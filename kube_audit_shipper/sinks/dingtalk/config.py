"""`type: dingtalk` alert target config: a DingTalk group's custom robot (自定义机器人), signed.

```yaml
alerts:
  - name: oncall-ding
    type: dingtalk
    access_token: "${file:/run/secrets/ding/token}"   # the access_token of the robot's webhook URL
    secret: "${file:/run/secrets/ding/secret}"         # 加签 secret (SEC...); absent: a robot secured by keywords or IP only
    title: "kube-audit"                                # put the robot's custom keyword here if it uses keywords
    at_mobiles: ["13800000000"]                        # mentioned when a digest holds an alert of mention_min_severity or worse
```

DingTalk takes 20 messages a minute per robot and throttles it for 10 minutes beyond that, so alerts are
merged into markdown digests (up to `max_alerts_per_message`, `max_message_bytes`) and the target never
sends more than `rate_messages` per `rate_window_s`. Several agents sharing one robot (one per control-plane
node) share its 20: give each `rate_messages: 6` for three nodes, or each node a robot of its own.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from kube_audit_shipper.delivery.config import HttpSinkConfigBase
from kube_audit_shipper.model import Severity
from kube_audit_shipper.sinks.http.config import base_problems, endpoint_problems

DINGTALK_MESSAGES_PER_MINUTE = 20
DINGTALK_MAX_MESSAGE_BYTES = 20000  # "message too long, exceed 20000 bytes"


class DingTalkTargetConfig(HttpSinkConfigBase, tag="dingtalk", kw_only=True, frozen=True, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(min_length=1, description="the robot send endpoint, without query")] = "https://oapi.dingtalk.com/robot/send"
    ordered_because: ClassVar[str | None] = "its rate limit (20 messages a minute per robot) is counted one message at a time"

    access_token: Annotated[
        str,
        msgspec.Meta(min_length=1, description="the robot's access_token (from its webhook URL); use ${file:...}", examples=["${DINGTALK_ACCESS_TOKEN}"]),
    ]
    secret: Annotated[str | None, msgspec.Meta(description="the robot's signing secret (加签, SEC...); use ${file:...}")] = None
    title: Annotated[
        str, msgspec.Meta(min_length=1, max_length=64, description="start of every message title and heading; include the robot's keyword if it has one")
    ] = "kube-audit"
    at_mobiles: Annotated[list[str], msgspec.Meta(description="phone numbers to @mention on serious digests")] = msgspec.field(default_factory=list)
    at_user_ids: Annotated[list[str], msgspec.Meta(description="DingTalk user ids to @mention on serious digests")] = msgspec.field(default_factory=list)
    at_all: Annotated[bool, msgspec.Meta(description="@all on serious digests")] = False
    mention_min_severity: Annotated[Severity, msgspec.Meta(description="a digest mentions only when it holds an alert this severe or worse")] = "high"
    max_alerts_per_message: Annotated[int, msgspec.Meta(ge=1, le=100, description="alerts merged into one digest; more go in the next")] = 20
    max_message_bytes: Annotated[
        int, msgspec.Meta(ge=2048, le=DINGTALK_MAX_MESSAGE_BYTES, description="bytes of one message body (DingTalk refuses more than 20000)")
    ] = 18000
    rate_messages: Annotated[int, msgspec.Meta(ge=1, le=DINGTALK_MESSAGES_PER_MINUTE, description="at most this many messages ...")] = 20
    rate_window_s: Annotated[float, msgspec.Meta(ge=1, le=3600, description="... in any window of this many seconds (DingTalk: 20 per 60 s per robot)")] = 60.0
    throttle_pause_s: Annotated[
        float, msgspec.Meta(ge=0, le=3600, description="send nothing this long after DingTalk answered 130101 (it throttles a robot for 10 minutes)")
    ] = 600.0

    def __post_init__(self) -> None:
        problems = base_problems(super().__post_init__)
        problems += endpoint_problems(self, self.url, "url")
        if self.rate_messages * 60 > DINGTALK_MESSAGES_PER_MINUTE * self.rate_window_s:
            problems.append(
                f"rate_messages/rate_window_s: {self.rate_messages} per {self.rate_window_s:g} s is more than DingTalk's "
                f"{DINGTALK_MESSAGES_PER_MINUTE} per minute (over it, the robot is throttled for 10 minutes)"
            )
        for mobile in self.at_mobiles:
            if not mobile.lstrip("+").replace("-", "").isdigit():
                problems.append(f"at_mobiles: {mobile!r} is not a phone number")
        if problems:
            raise ValueError("; ".join(problems))

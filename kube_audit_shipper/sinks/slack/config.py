"""`type: slack` alert target config: a Slack incoming webhook, messages in Block Kit.

```yaml
alerts:
  - name: oncall-slack
    type: slack
    webhook_url: "${file:/run/secrets/slack/webhook}"   # https://hooks.slack.com/services/T.../B.../...: a secret
    mention: "<!here>"                                   # or <@U0123ABCD>, <!subteam^S0123ABCD>
```

Slack takes about one message a second per webhook, so alerts are merged into digests (at most
`max_alerts_per_message`, which Slack's 50 blocks per message bound at 16) and the target sends at most
`rate_messages` per `rate_window_s`.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from kube_audit_shipper.delivery.config import HttpSinkConfigBase
from kube_audit_shipper.model import Severity
from kube_audit_shipper.sinks.http.config import base_problems, endpoint_problems

MAX_BLOCKS = 50  # Slack: blocks per message
BLOCKS_PER_ALERT = 3  # section, context, divider
MAX_ALERTS = (MAX_BLOCKS - 2) // BLOCKS_PER_ALERT  # a header and a mention section besides: 16


class SlackTargetConfig(HttpSinkConfigBase, tag="slack", kw_only=True, frozen=True, forbid_unknown_fields=True):
    ordered_because: ClassVar[str | None] = "its rate limit (about one message a second per webhook) is counted one message at a time"

    webhook_url: Annotated[
        str,
        msgspec.Meta(min_length=1, description="the incoming webhook URL (it is the credential: use ${file:...})", examples=["${SLACK_WEBHOOK_URL}"]),
    ]
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=100, description="start of every message's header")] = "kube-audit"
    mention: Annotated[
        str | None, msgspec.Meta(description="mention for serious digests, in Slack's syntax: <!here>, <!channel>, <@U...>, <!subteam^S...>")
    ] = None
    mention_min_severity: Annotated[Severity, msgspec.Meta(description="a digest mentions only when it holds an alert this severe or worse")] = "high"
    max_alerts_per_message: Annotated[int, msgspec.Meta(ge=1, le=MAX_ALERTS, description="alerts merged into one message; more go in the next")] = MAX_ALERTS
    max_message_bytes: Annotated[int, msgspec.Meta(ge=4096, le=1 << 20, description="bytes of one message body; more alerts go in the next")] = 32_000
    rate_messages: Annotated[int, msgspec.Meta(ge=1, le=100, description="at most this many messages ...")] = 1
    rate_window_s: Annotated[float, msgspec.Meta(ge=1, le=3600, description="... in any window of this many seconds (Slack: about 1 a second)")] = 1.0

    def __post_init__(self) -> None:
        problems = base_problems(super().__post_init__)
        problems += endpoint_problems(self, self.webhook_url, "webhook_url")
        if self.rate_messages > self.rate_window_s:
            problems.append(f"rate_messages/rate_window_s: {self.rate_messages} per {self.rate_window_s:g} s is more than Slack's one message a second")
        if self.mention is not None and not (self.mention.startswith("<") and self.mention.endswith(">")):
            problems.append("mention: use Slack's syntax, e.g. <!here> or <@U0123ABCD>")
        if problems:
            raise ValueError("; ".join(problems))

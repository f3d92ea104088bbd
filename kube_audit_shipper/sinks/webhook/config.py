"""`type: webhook` alert target config: Alertmanager's webhook body (version 4) POSTed to any receiver.

```yaml
alerts:
  - name: soc
    type: webhook
    url: https://soc.example/hooks/alertmanager
    receiver: kube-audit
    group_by: [alertname]          # one message per rule (as an Alertmanager route with group_by: [alertname])
    bearer_token_file: /var/run/secrets/soc/token
```
Labels, annotations and times are shaped as for `type: alertmanager` (the same keys: cluster, labels,
label_fields, annotations, resolve_after_s, generator_url).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from kube_audit_shipper.sinks.alertmanager.config import LABEL_NAME, AlertShapeBase
from kube_audit_shipper.sinks.http.config import base_problems, endpoint_problems


class WebhookTargetConfig(AlertShapeBase, tag="webhook", kw_only=True, frozen=True, forbid_unknown_fields=True):
    url: Annotated[
        str,
        msgspec.Meta(min_length=1, description="the receiver's URL, as in an Alertmanager webhook_config", examples=["https://soc.example/hooks/alertmanager"]),
    ]
    receiver: Annotated[str, msgspec.Meta(min_length=1, description="the body's `receiver`")] = "kube-audit-shipper"
    external_url: Annotated[str, msgspec.Meta(description="the body's `externalURL` (Alertmanager's own URL there; a link to your console here)")] = ""
    group_by: Annotated[
        list[str],
        msgspec.Meta(description="labels that make a group: alerts of one group share a message (groupLabels, groupKey); [] puts a batch in one message"),
    ] = msgspec.field(default_factory=lambda: ["alertname"])
    max_alerts_per_message: Annotated[
        int, msgspec.Meta(ge=1, le=10_000, description="alerts in one message; more go in the next (truncatedAlerts stays 0)")
    ] = 64
    max_request_bytes: Annotated[int, msgspec.Meta(ge=16 << 10, le=64 << 20, description="bytes of one message body")] = 1 << 20

    def __post_init__(self) -> None:
        problems = base_problems(super().__post_init__)
        problems += endpoint_problems(self, self.url, "url", query_ok=True) + self.auth_problems() + self._shape_problems()
        for name in self.group_by:
            if not LABEL_NAME.match(name):
                problems.append(f"group_by: {name!r} is not a valid label name")
        if len(set(self.group_by)) != len(self.group_by):
            problems.append("group_by: a label is listed twice")
        if problems:
            raise ValueError("; ".join(problems))

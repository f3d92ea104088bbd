"""`type: alertmanager` alert target config, and the keys that shape an alert as Alertmanager's (shared with `webhook`).

```yaml
alerts:
  - name: am
    type: alertmanager
    url: http://alertmanager.monitoring:9093        # /api/v2/alerts is added
    cluster: prod-cn-hangzhou                       # the `cluster` label when the alert carries none
    labels: {team: platform}                        # static labels on every alert
    label_fields: [namespace]                       # alert fields copied into labels
    annotations: {runbook_url: "https://wiki/kube-audit"}
    resolve_after_s: 3600
    generator_url: "https://grafana.example/explore?audit={audit_id}"
    bearer_token_file: /var/run/secrets/am/token
```

Every alert gets the labels `alertname` (the rule id), `severity`, `cluster`, `node`, `alert_id` (the
detection's stable id, so two detections of one rule stay two alerts instead of one updated alert) and
`group` (an aggregate's group value, e.g. the source IP). Label names must be Prometheus label names.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from kube_audit_shipper.sinks.http.config import HttpAuthConfigBase, base_problems, endpoint_problems, url_problems

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
#: labels the target sets from the alert itself
RESERVED_LABELS = ("alertname", "severity", "cluster", "node", "alert_id", "group")
#: annotations the target sets from the alert itself
RESERVED_ANNOTATIONS = ("summary", "description")
#: placeholders of generator_url (each value URL-encoded)
URL_PLACEHOLDERS = ("rule", "id", "audit_id", "group", "node", "cluster")


class AlertShapeBase(HttpAuthConfigBase, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How an alert becomes an Alertmanager alert (labels, annotations, times): alertmanager and webhook targets."""

    cluster: Annotated[str | None, msgspec.Meta(description="value of the `cluster` label for alerts that carry no cluster")] = None
    labels: Annotated[dict[str, str], msgspec.Meta(description="static labels added to every alert (routing: team, env, ...)")] = msgspec.field(
        default_factory=dict
    )
    label_fields: Annotated[
        list[str], msgspec.Meta(description="alert output fields copied into labels when present (e.g. namespace); each value is one label value")
    ] = msgspec.field(default_factory=list)
    annotations: Annotated[dict[str, str], msgspec.Meta(description="static annotations added to every alert (runbook_url, dashboard, ...)")] = msgspec.field(
        default_factory=dict
    )
    resolve_after_s: Annotated[
        int,
        msgspec.Meta(
            ge=60,
            le=30 * 86400,
            description="endsAt = the later of the event time and the time the alert is sent, plus this: a one-off detection resolves by itself",
        ),
    ] = 3600
    generator_url: Annotated[
        str | None,
        msgspec.Meta(description="generatorURL template with {rule}, {id}, {audit_id}, {group}, {node}, {cluster} (URL-encoded); absent: none"),
    ] = None

    def _shape_problems(self) -> list[str]:
        problems = []
        for key, names, reserved in (("labels", list(self.labels), RESERVED_LABELS), ("annotations", list(self.annotations), RESERVED_ANNOTATIONS)):
            for name in names:
                if not LABEL_NAME.match(name):
                    problems.append(f"{key}.{name}: not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)")
                elif name in reserved:
                    problems.append(f"{key}.{name}: set from the alert itself")
        for name in self.label_fields:
            if not LABEL_NAME.match(name):
                problems.append(f"label_fields: {name!r} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)")
            elif name in RESERVED_LABELS or name in self.labels:
                problems.append(f"label_fields: {name!r} is already a label")
        for name, value in self.labels.items():
            if not value:
                problems.append(f"labels.{name}: a label value must not be empty")
        if self.generator_url is not None:
            try:
                example = self.generator_url.format_map(dict.fromkeys(URL_PLACEHOLDERS, "x"))
            except (KeyError, ValueError, IndexError) as exc:
                problems.append(f"generator_url: placeholders are {', '.join('{' + p + '}' for p in URL_PLACEHOLDERS)} ({type(exc).__name__}: {exc})")
            else:
                problems += url_problems(example, "generator_url", query_ok=True)
        return problems


class AlertmanagerTargetConfig(AlertShapeBase, tag="alertmanager", kw_only=True, frozen=True, forbid_unknown_fields=True):
    url: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            description="Alertmanager base URL, e.g. http://alertmanager:9093 (with its route prefix, if any); /api/v2/alerts is added",
            examples=["http://alertmanager.monitoring:9093"],
        ),
    ]
    max_alerts_per_request: Annotated[int, msgspec.Meta(ge=1, le=10_000, description="alerts in one POST; a larger batch is sent as several")] = 256
    max_request_bytes: Annotated[int, msgspec.Meta(ge=16 << 10, le=64 << 20, description="bytes of one POST body; a larger batch is sent as several")] = 1 << 20

    def __post_init__(self) -> None:
        problems = base_problems(super().__post_init__)
        problems += endpoint_problems(self, self.url, "url") + self.auth_problems() + self._shape_problems()
        if "/api/v1" in self.url:
            problems.append("url: give the base URL; this target posts to /api/v2/alerts (API v1 was removed in Alertmanager 0.27)")
        if problems:
            raise ValueError("; ".join(problems))

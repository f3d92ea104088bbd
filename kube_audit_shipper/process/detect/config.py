"""`detect:` section of the agent config: which rules run, how they are tuned, and the engine's bounds.

```yaml
detect:
  rule_files: [/etc/kube-audit-shipper/rules/*.yaml]     # our format or Sigma, by content
  rules:                                                  # built-in or file rules, tuned by id
    exec-into-container: {severity: critical, exceptions: {users: [ci-bot]}}
    public-access-failures: {window_s: 600, threshold: {count: {ge: 20}}}
    nodeport-service: {enabled: false}
  exceptions: {namespaces: [sandbox], source_cidrs: [192.0.2.0/24]}     # for every rule
  internal_cidrs: [203.0.113.0/24]                        # public addresses that are ours
  geoip: [/var/lib/GeoIP/GeoLite2-City.mmdb, /var/lib/GeoIP/GeoLite2-ASN.mmdb]
  risky_cidrs: [/etc/kube-audit-shipper/firehol_level1.netset]
```
Whether tuned ids exist, rule files load and databases open is checked when the engine is built
(`kube_audit_shipper.process.detect.build`), with every problem under its key path.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

import msgspec

from kube_audit_shipper.model import Severity

_WEEK_S = 7 * 86400


def _cidr_problems(key: str, values: list[str]) -> list[str]:
    problems = []
    for index, value in enumerate(values):
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            problems.append(f"{key}[{index}]: not a CIDR or IP address: {value!r}")
    return problems


class ExceptionsConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    users: Annotated[list[str], msgspec.Meta(description="user names (authenticated, impersonated or acting); `prefix*` for a prefix")] = msgspec.field(
        default_factory=list
    )
    groups: Annotated[list[str], msgspec.Meta(description="groups of the authenticated user; `prefix*` for a prefix")] = msgspec.field(default_factory=list)
    namespaces: Annotated[list[str], msgspec.Meta(description="objectRef.namespace values; `prefix*` for a prefix")] = msgspec.field(default_factory=list)
    user_agents: Annotated[list[str], msgspec.Meta(description="userAgent values; `prefix*` for a prefix (e.g. `kubectl/*`)")] = msgspec.field(
        default_factory=list
    )
    source_cidrs: Annotated[list[str], msgspec.Meta(description="client networks (first sourceIPs entry)")] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        problems = _cidr_problems("source_cidrs", self.source_cidrs)
        if problems:
            raise ValueError("; ".join(problems))


class Bounds(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    gt: Annotated[float | None, msgspec.Meta(description="the metric must be greater than this")] = None
    ge: Annotated[float | None, msgspec.Meta(description="the metric must be at least this")] = None
    lt: Annotated[float | None, msgspec.Meta(description="the metric must be less than this")] = None
    le: Annotated[float | None, msgspec.Meta(description="the metric must be at most this")] = None

    def __post_init__(self) -> None:
        if self.gt is None and self.ge is None and self.lt is None and self.le is None:
            raise ValueError("give at least one of gt, ge, lt, le")


class RuleTuning(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    enabled: Annotated[bool | None, msgspec.Meta(description="switch the rule on or off")] = None
    severity: Annotated[Severity | None, msgspec.Meta(description="replace the rule's severity")] = None
    window_s: Annotated[Annotated[float, msgspec.Meta(gt=0, le=_WEEK_S)] | None, msgspec.Meta(description="aggregate rules: the window")] = None
    dedup_s: Annotated[
        Annotated[float, msgspec.Meta(ge=0, le=_WEEK_S)] | None,
        msgspec.Meta(description="aggregate rules: quiet time after an alert; rules with dedup: the dedup period"),
    ] = None
    threshold: Annotated[
        dict[str, Bounds] | None, msgspec.Meta(description="aggregate rules: bounds per metric, replacing the rule's bounds for each metric named")
    ] = None
    exceptions: Annotated[ExceptionsConfig | None, msgspec.Meta(description="added to the rule's own exceptions")] = None


class DetectConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    enabled: Annotated[bool, msgspec.Meta(description="evaluate detection rules on every event as recorded (before policy trimming)")] = True
    builtin_rules: Annotated[bool, msgspec.Meta(description="load the built-in rule pack (docs/rules.md lists it)")] = True
    rule_files: Annotated[
        list[str], msgspec.Meta(description="more rule files (our YAML format or Sigma rules, told apart by content); shell globs allowed")
    ] = msgspec.field(default_factory=list)
    rules: Annotated[dict[str, RuleTuning], msgspec.Meta(description="per rule id: switch off or tune a built-in or file rule without copying it")] = (
        msgspec.field(default_factory=dict)
    )
    exceptions: Annotated[ExceptionsConfig, msgspec.Meta(description="exceptions for every rule")] = msgspec.field(default_factory=ExceptionsConfig)
    internal_cidrs: Annotated[
        list[str], msgspec.Meta(description="public networks to treat as internal (not public) besides private, loopback, link-local and CGNAT")
    ] = msgspec.field(default_factory=list)
    geoip: Annotated[
        list[str], msgspec.Meta(description="MaxMind-format databases (GeoLite2/DB-IP Lite city, country or ASN) for alert fields; never downloaded")
    ] = msgspec.field(default_factory=list)
    risky_cidrs: Annotated[
        list[str], msgspec.Meta(description="CIDR list files (FireHOL .netset, Spamhaus DROP text or JSON) flagging risky client addresses")
    ] = msgspec.field(default_factory=list)
    max_tracked_requests: Annotated[
        int, msgspec.Meta(ge=100, le=10_000_000, description="auditIDs of long-running requests remembered so a rule fires once per request")
    ] = 100_000
    max_dedup_keys: Annotated[int, msgspec.Meta(ge=100, le=10_000_000, description="dedup keys remembered across all rules")] = 100_000
    max_groups_per_rule: Annotated[int, msgspec.Meta(ge=10, le=10_000_000, description="aggregate groups (e.g. source IPs) kept per rule")] = 10_000
    max_distinct_values: Annotated[int, msgspec.Meta(ge=10, le=1_000_000, description="values kept per distinct metric, group and bucket")] = 10_000

    def __post_init__(self) -> None:
        problems = _cidr_problems("internal_cidrs", self.internal_cidrs)
        if problems:
            raise ValueError("; ".join(problems))

"""`enrich:` section of the agent config.

Every part is on by default (they only cost a few microseconds per event, and redaction only touches events
that carry a body of an affected resource or a token-like query parameter); an empty section is valid.

```yaml
enrich:
  static_fields: {cluster_id: c-1234, region: cn-hangzhou}   # top-level fields
  node_field: node                                            # "" to leave the node name out
  derived: {field: derived, shared_admin_users: [kubernetes-admin]}
  redact: {mode: hash, hash_key: "${file:/etc/kas/redact.key}", rules: [{resource: configmaps, fields: [data]}]}
```
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

#: Top-level field names of an audit.k8s.io Event (v1 and v1beta1): enrichment never overwrites them.
AUDIT_EVENT_FIELDS = frozenset(
    {
        "kind",
        "apiVersion",
        "metadata",
        "level",
        "timestamp",
        "auditID",
        "stage",
        "requestURI",
        "verb",
        "user",
        "impersonatedUser",
        "sourceIPs",
        "userAgent",
        "objectRef",
        "responseStatus",
        "requestObject",
        "responseObject",
        "requestReceivedTimestamp",
        "stageTimestamp",
        "annotations",
        "authenticationMetadata",
    }
)

DerivedField = Literal["source_ip", "source_ip_public", "user_kind", "effective_user", "outcome", "latency_ms", "pod_session"]
ALL_DERIVED_FIELDS: tuple[DerivedField, ...] = (
    "source_ip",
    "source_ip_public",
    "user_kind",
    "effective_user",
    "outcome",
    "latency_ms",
    "pod_session",
)


class DerivedConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    enabled: Annotated[bool, msgspec.Meta(description="add the derived security fields object")] = True
    field: Annotated[str, msgspec.Meta(min_length=1, description="top-level name of the object holding the derived fields")] = "derived"
    include: Annotated[
        tuple[DerivedField, ...],
        msgspec.Meta(description="which derived fields to compute (default: all of them)"),
    ] = ALL_DERIVED_FIELDS
    shared_admin_users: Annotated[
        tuple[str, ...],
        msgspec.Meta(
            description="shared administrator identities: for these, effective_user is the user named in the "
            'authorization reason (`... to User "alice"`), as ACK\'s exec-alert query does'
        ),
    ] = ("kubernetes-admin",)
    system_user_prefixes: Annotated[
        tuple[str, ...],
        msgspec.Meta(description="user name prefixes of control-plane components (user_kind `system`)"),
    ] = ("system:", "eks:")


class RedactRule(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    resource: Annotated[
        str,
        msgspec.Meta(min_length=1, description="resource as in objectRef, `resource` or `resource/subresource`"),
    ]
    group: Annotated[str, msgspec.Meta(description='API group of the resource ("" = core)')] = ""
    fields: Annotated[
        tuple[str, ...],
        msgspec.Meta(
            min_length=1,
            description="dotted paths inside the object (`data`, `spec.token`; `\\.` for a dot inside a key); "
            "applied to requestObject and responseObject, to every item of a List and row of a Table, and to "
            "the values of JSON-patch operations that touch them",
        ),
    ]


DEFAULT_REDACT_RULES = (
    RedactRule(
        resource="secrets",
        fields=("data", "stringData", "metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration"),
    ),
    RedactRule(resource="serviceaccounts/token", fields=("status.token",)),
    RedactRule(group="authentication.k8s.io", resource="tokenreviews", fields=("spec.token",)),
    RedactRule(group="authentication.k8s.io", resource="tokenrequests", fields=("status.token",)),
)
DEFAULT_QUERY_PARAMS = (
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "client_secret",
    "password",
    "api_key",
    "apikey",
)


class RedactConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    enabled: Annotated[bool, msgspec.Meta(description="mask secrets in request/response bodies and requestURI")] = True
    mode: Annotated[
        Literal["replace", "hash"],
        msgspec.Meta(description="replace: put `replacement` in place of each value; hash: put `sha256:<hex>` of it"),
    ] = "replace"
    replacement: Annotated[str, msgspec.Meta(description="the text a masked value becomes in replace mode")] = "***"
    hash_key: Annotated[
        str | None,
        msgspec.Meta(description="with mode hash: HMAC-SHA256 key, so short secrets cannot be recovered by guessing; absent: plain SHA-256"),
    ] = None
    default_rules: Annotated[
        bool,
        msgspec.Meta(
            description="also apply the built-in rules: Secret data/stringData/last-applied-configuration, "
            "TokenRequest and TokenReview tokens, token-like requestURI query parameters"
        ),
    ] = True
    rules: Annotated[tuple[RedactRule, ...], msgspec.Meta(description="additional body redaction rules")] = ()
    query_params: Annotated[
        tuple[str, ...],
        msgspec.Meta(description="additional requestURI query parameter names to mask (case-insensitive)"),
    ] = ()

    def effective_rules(self) -> tuple[RedactRule, ...]:
        return (DEFAULT_REDACT_RULES if self.default_rules else ()) + self.rules

    def effective_query_params(self) -> frozenset[str]:
        names = (DEFAULT_QUERY_PARAMS if self.default_rules else ()) + self.query_params
        return frozenset(name.lower() for name in names)


class EnrichConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    enabled: Annotated[bool, msgspec.Meta(description="master switch: false ships events without any enrichment or redaction")] = True
    static_fields: Annotated[
        dict[str, str | int | float | bool],
        msgspec.Meta(description="static top-level fields added to every event, e.g. cluster_id and region"),
    ] = msgspec.field(default_factory=dict)
    node_field: Annotated[
        str,
        msgspec.Meta(description='top-level field holding the node name (the agent\'s `node_name`); "" leaves it out'),
    ] = "node"
    derived: Annotated[DerivedConfig, msgspec.Meta(description="derived security fields")] = msgspec.field(default_factory=DerivedConfig)
    redact: Annotated[RedactConfig, msgspec.Meta(description="secret redaction")] = msgspec.field(default_factory=RedactConfig)

    def __post_init__(self) -> None:
        names = list(self.static_fields)
        if self.node_field:
            names.append(self.node_field)
        if self.derived.enabled:
            names.append(self.derived.field)
        problems = []
        for name in sorted(set(names)):
            if not name:
                problems.append("an added field name is empty")
            elif name in AUDIT_EVENT_FIELDS:
                problems.append(f"added field {name!r} would overwrite the audit event's own field")
            elif names.count(name) > 1:
                problems.append(f"added field {name!r} is configured twice")
        if problems:
            raise ValueError("; ".join(problems))

    def added_field_names(self) -> frozenset[str]:
        """Every top-level field enrichment may add (static fields, node, derived object)."""
        if not self.enabled:
            return frozenset()
        names = set(self.static_fields)
        if self.node_field:
            names.add(self.node_field)
        if self.derived.enabled:
            names.add(self.derived.field)
        return frozenset(names)

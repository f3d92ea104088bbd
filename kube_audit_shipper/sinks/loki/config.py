"""`type: loki` sink config (Grafana Loki push API).

```yaml
- name: loki
  type: loki
  url: http://127.0.0.1:3100
  tenant_id: ""
  labels: {job: kube-audit, cluster: c0123}
  label_fields: [verb]
  encoding: protobuf          # or json
```
Limits default to a stock Loki 3's: 256 KiB lines, 15 label names, 1 MiB requests (never above 3.5 MB: Loki
answers 500 to a gRPC message over 4 MiB and 429 for ever to a request over the 6 MB ingestion burst).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

import msgspec

from kube_audit_shipper.sinks.http.config import HttpAuthConfigBase
from kube_audit_shipper.sinks.loki.fields import FIELDS, LABEL_NAME, cardinality_problem

#: Loki's limits a request must stay under whatever the config says (stock values).
MAX_REQUEST_BYTES = 3_500_000
MAX_LABEL_NAME_BYTES = 1024
MAX_LABEL_VALUE_BYTES = 2048
#: Headers the sink sets itself.
RESERVED_HEADERS = frozenset({"content-type", "content-encoding", "content-length", "host", "x-scope-orgid", "transfer-encoding"})


class LokiSinkConfig(HttpAuthConfigBase, tag="loki", kw_only=True, frozen=True, forbid_unknown_fields=True):
    ordered_because: ClassVar[str | None] = "Loki refuses entries older than the last one of their stream: pushes must arrive in order"

    url: Annotated[
        str,
        msgspec.Meta(
            min_length=1, description="base URL, e.g. http://127.0.0.1:3100 (the push path /loki/api/v1/push is added)", examples=["http://127.0.0.1:3100"]
        ),
    ]
    tenant_id: Annotated[str, msgspec.Meta(description="X-Scope-OrgID; empty: no header")] = ""
    labels: Annotated[dict[str, str], msgspec.Meta(description="fixed stream labels; few and constant (job, cluster, ...)")] = msgspec.field(
        default_factory=lambda: {"job": "kube-audit"}
    )
    node_label: Annotated[str, msgspec.Meta(description='label holding the node name; "" leaves it out')] = "node"
    label_fields: Annotated[
        list[str],
        msgspec.Meta(description="event fields that become stream labels (few values only: verb, stage, level, resource, code, decision, outcome, ...)"),
    ] = msgspec.field(default_factory=lambda: ["verb"])
    force_labels: Annotated[
        list[str],
        msgspec.Meta(description="fields of label_fields accepted as labels although their values are unbounded (user, namespace, ...): one stream per value"),
    ] = msgspec.field(default_factory=list)
    structured_metadata: Annotated[
        list[str],
        msgspec.Meta(description="event fields sent as structured metadata (Loki 3) with each line; [] for none (Loki 2, or a tenant that disallows it)"),
    ] = msgspec.field(default_factory=lambda: ["auditID", "user", "namespace", "resource"])
    encoding: Annotated[Literal["protobuf", "json"], msgspec.Meta(description="protobuf: snappy-compressed PushRequest; json: the JSON push body")] = "protobuf"
    json_compression: Annotated[Literal["gzip", "none"], msgspec.Meta(description="encoding json only: gzip the body (Content-Encoding: gzip)")] = "gzip"
    max_request_bytes: Annotated[
        int,
        msgspec.Meta(ge=16 << 10, le=MAX_REQUEST_BYTES, description="uncompressed bytes per push request; a larger batch is sent as several requests"),
    ] = 1 << 20
    max_line_bytes: Annotated[
        int,
        msgspec.Meta(ge=16 << 10, le=MAX_REQUEST_BYTES, description="Loki's max_line_size: a longer event is trimmed to Metadata level and annotated"),
    ] = 256 << 10
    max_label_names: Annotated[int, msgspec.Meta(ge=1, le=1000, description="Loki's max_label_names_per_series (service_name not counted)")] = 15
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600, description="whole-request timeout of one push")] = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = _url_problems(self.url, self.tls is not None) + self._label_problems()
        problems += self.auth_problems(RESERVED_HEADERS, "set by the sink (use tenant_id for X-Scope-OrgID)") + self.http_problems()
        problems += _known("structured_metadata", self.structured_metadata)
        if problems:
            raise ValueError("; ".join(problems))

    def _label_problems(self) -> list[str]:
        problems = []
        names = list(self.labels) + ([self.node_label] if self.node_label else []) + list(self.label_fields)
        for name in names:
            if not LABEL_NAME.match(name) or name.startswith("__"):
                problems.append(f"label name {name!r} is not a valid Loki label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)")
            elif len(name) > MAX_LABEL_NAME_BYTES:
                problems.append(f"label name {name[:40]!r}... is longer than {MAX_LABEL_NAME_BYTES} bytes")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            problems.append(f"label {', '.join(duplicates)} is set twice (labels, node_label and label_fields must not overlap)")
        for name, value in self.labels.items():
            if not value:
                problems.append(f"labels.{name}: a label value must not be empty")
            elif len(value.encode()) > MAX_LABEL_VALUE_BYTES:
                problems.append(f"labels.{name}: value longer than {MAX_LABEL_VALUE_BYTES} bytes")
        for name in self.label_fields:
            why = cardinality_problem(name)
            if why is not None and (name not in FIELDS or name not in self.force_labels):
                hint = "" if name not in FIELDS else "; keep it in structured_metadata, or list it in force_labels to accept the streams"
                problems.append(f"label_fields: {name!r} is refused as a Loki label: {why}{hint}")
        for name in self.force_labels:
            if name not in self.label_fields:
                problems.append(f"force_labels: {name!r} is not in label_fields")
        if len(set(names)) > self.max_label_names:
            problems.append(
                f"{len(set(names))} labels (labels, node_label, label_fields) are more than Loki's limit of {self.max_label_names} (max_label_names)"
            )
        return problems


def _known(key: str, names: list[str]) -> list[str]:
    problems = [f"{key}: unknown field {n!r}; known: {', '.join(FIELDS)}" for n in names if n not in FIELDS]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    return problems + ([f"{key}: {', '.join(duplicates)} listed twice"] if duplicates else [])


def _url_problems(url: str, tls: bool) -> list[str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"url {url!r}: expected http://host[:port][/prefix] or https://..."]
    problems = []
    if parts.username is not None or parts.password is not None:
        problems.append("url: put credentials in basic_auth, not in the URL (URLs end up in logs)")
    if parts.query or parts.fragment:
        problems.append("url: no query or fragment")
    if tls and parts.scheme != "https":
        problems.append("tls is set but url is not https")
    return problems

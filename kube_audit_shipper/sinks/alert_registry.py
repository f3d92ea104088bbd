"""The one place that knows every alert target: type name → config class and implementation, for `alerts:`.

An alert target is a sink (delivery/contract.py) that receives Alert records (model.py) through the same
delivery engine as events: batching, retries, spool, dead letters, blocked state and metrics, per target.

    alertmanager, dingtalk, slack, webhook   sinks/<type>/: alerts as the backend shows them
    file, sls, loki, s3                      the event sinks, storing alerts as JSON records (`format`):
                                             `alert`: the Alert record as it is; `falco`: Falco's JSON output
                                             (sinks/alerts/format.py), so falcosidekick can forward them

A record target's config is the event sink's config plus `format` (with defaults that suit alerts: file
prefix `alerts`, S3 keys under `alerts/`, Loki label job="kube-audit-alerts"), and its implementation is the
event sink with AlertRecordMixin in front: `encode` converts the records first (a record that is no alert
becomes a request of its own that is rejected, with the reason, without I/O).

Config classes are imported eagerly (they only need msgspec); implementations only when a target of that
type is configured, as in sinks/registry.py. Construction is in `build_alert_target` only.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Annotated, Any, Union
from urllib.parse import urlsplit

import msgspec

from kube_audit_shipper.delivery.config import SinkConfigBase
from kube_audit_shipper.delivery.context import SinkContext
from kube_audit_shipper.delivery.contract import Outcome, Reply, Request, Sink
from kube_audit_shipper.sinks.alertmanager.config import AlertmanagerTargetConfig
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.alerts.format import AlertFormat
from kube_audit_shipper.sinks.dingtalk.config import DingTalkTargetConfig
from kube_audit_shipper.sinks.file.config import FileSinkConfig
from kube_audit_shipper.sinks.http.config import HttpAuthConfigBase
from kube_audit_shipper.sinks.loki.config import LokiSinkConfig
from kube_audit_shipper.sinks.registry import SINK_IMPLEMENTATIONS, implementation
from kube_audit_shipper.sinks.s3.config import S3SinkConfig
from kube_audit_shipper.sinks.slack.config import SlackTargetConfig
from kube_audit_shipper.sinks.sls.config import SlsSinkConfig
from kube_audit_shipper.sinks.webhook.config import WebhookTargetConfig

_FORMAT_DOC = "alert: the Alert record as detection raised it; falco: Falco's JSON output (time, rule, priority, source, hostname, output, output_fields, tags)"


# -- record targets: the event sinks' configs, plus `format` ------------------------------------------------
class FileAlertTargetConfig(FileSinkConfig, tag="file", kw_only=True, frozen=True, forbid_unknown_fields=True):
    format: Annotated[AlertFormat, msgspec.Meta(description=_FORMAT_DOC)] = "alert"
    file_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="file names: <prefix>-<UTC start time>-<seq>.ndjson.zst")] = (
        "alerts"
    )


class SlsAlertTargetConfig(SlsSinkConfig, tag="sls", kw_only=True, frozen=True, forbid_unknown_fields=True):
    format: Annotated[AlertFormat, msgspec.Meta(description=_FORMAT_DOC)] = "alert"


class LokiAlertTargetConfig(LokiSinkConfig, tag="loki", kw_only=True, frozen=True, forbid_unknown_fields=True):
    format: Annotated[AlertFormat, msgspec.Meta(description=_FORMAT_DOC)] = "alert"
    labels: Annotated[dict[str, str], msgspec.Meta(description="fixed stream labels of the alert stream")] = msgspec.field(
        default_factory=lambda: {"job": "kube-audit-alerts"}
    )
    label_fields: Annotated[list[str], msgspec.Meta(description="must stay []: these are audit-event fields, which alert records do not have")] = msgspec.field(
        default_factory=list
    )
    structured_metadata: Annotated[list[str], msgspec.Meta(description="must stay []: these are audit-event fields, which alert records do not have")] = (
        msgspec.field(default_factory=list)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = [
            f"{key}: must be [] for alerts: {', '.join(getattr(self, key))} {'is an audit-event field' if len(getattr(self, key)) == 1 else 'are audit-event fields'}, "
            "which alert records do not have"
            for key in ("label_fields", "structured_metadata")
            if getattr(self, key)
        ]
        if problems:
            raise ValueError("; ".join(problems))


class S3AlertTargetConfig(S3SinkConfig, tag="s3", kw_only=True, frozen=True, forbid_unknown_fields=True):
    format: Annotated[AlertFormat, msgspec.Meta(description=_FORMAT_DOC)] = "alert"
    key_template: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            description="object key: strftime directives (UTC) and {node}, {first_ts}, {seq} and key_fields placeholders",
        ),
    ] = "alerts/dt=%Y-%m-%d/hour=%H/{node}-{first_ts}-{seq}.ndjson.zst"


ALERT_TARGET_CONFIGS: dict[str, type] = {
    "alertmanager": AlertmanagerTargetConfig,
    "dingtalk": DingTalkTargetConfig,
    "slack": SlackTargetConfig,
    "webhook": WebhookTargetConfig,
    "file": FileAlertTargetConfig,
    "sls": SlsAlertTargetConfig,
    "loki": LokiAlertTargetConfig,
    "s3": S3AlertTargetConfig,
}
ALERT_TARGET_IMPLEMENTATIONS: dict[str, str] = {
    "alertmanager": "kube_audit_shipper.sinks.alertmanager.sink:AlertmanagerSink",
    "dingtalk": "kube_audit_shipper.sinks.dingtalk.sink:DingTalkSink",
    "slack": "kube_audit_shipper.sinks.slack.sink:SlackSink",
    "webhook": "kube_audit_shipper.sinks.webhook.sink:WebhookSink",
}
RECORD_TARGETS = ("file", "sls", "loki", "s3")  # the event sink of the same type, behind AlertRecordMixin

if TYPE_CHECKING:  # what every member of the union has, for the type checker
    AlertTargetConfig = SinkConfigBase
else:  # a tagged union on `type`, built from the table above
    AlertTargetConfig = Union[tuple(ALERT_TARGET_CONFIGS.values())]  # noqa: UP007


def target_type(cfg: Any) -> str:
    return str(type(cfg).__struct_config__.tag)


def build_alert_target(cfg: Any, ctx: SinkContext) -> Sink:
    """Import the configured target's implementation (only now) and build it: `XSink(cfg, ctx)`."""
    kind = target_type(cfg)
    cls = _record_sink_class(kind) if kind in RECORD_TARGETS else implementation(ALERT_TARGET_IMPLEMENTATIONS[kind])
    return cls(cfg, ctx)  # type: ignore[call-arg]


class AlertRecordMixin:
    """Put before an event sink class: the sink stores alert records, converted to the target's `format` first.

    Positions are kept (record i of the batch is converted record i), so the event sink's requests, splits
    and partial rejections name the right alerts."""

    _alert_format: AlertFormat
    _alert_host: str

    def __init__(self, cfg: Any, ctx: SinkContext) -> None:
        super().__init__(cfg, ctx)  # type: ignore[call-arg]
        self._alert_format = cfg.format
        self._alert_host = ctx.node

    def encode(self, records: list[bytes]) -> list[Request]:
        converted, bad = alert_format.convert(records, self._alert_format, hostname=self._alert_host)
        good = [i for i in range(len(records)) if i not in bad]
        requests = alert_format.invalid_requests(bad)
        if good:
            for request in super().encode([converted[i] for i in good]):  # type: ignore[misc]
                request.indices = [good[k] for k in request.indices]
                requests.append(request)
        return requests

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        if alert_format.INVALID in request.meta:
            return []
        converted, _ = alert_format.convert(records, self._alert_format, hostname=self._alert_host)
        parts: list[Request] = super().split(request, converted)  # type: ignore[misc]
        return parts

    async def send(self, request: Request) -> Reply:
        alert_format.refuse_invalid(request)
        reply: Reply = await super().send(request)  # type: ignore[misc]
        return reply

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        invalid = alert_format.invalid_outcome(request, result)
        if invalid is not None:
            return invalid
        outcome: Outcome = super().classify(request, result)  # type: ignore[misc]
        return outcome


@functools.cache
def _record_sink_class(kind: str) -> type[Sink]:
    base = implementation(SINK_IMPLEMENTATIONS[kind])
    return type(f"Alert{base.__name__}", (AlertRecordMixin, base), {"__doc__": f"{base.__name__} storing alert records."})


# -- config checks the root config runs, and secrets the log scrubber must know ------------------------------
def name_problems(alerts: Any, sinks: Any = ()) -> list[str]:
    """Duplicate names among the raw `alerts:` items, and names a sink has already (both name a spool directory,
    a dead-letter source and a metrics label). Checked on the raw data, so reported along with every other error."""
    taken = {s.get("name"): i for i, s in enumerate(sinks if isinstance(sinks, list) else []) if isinstance(s, dict)}
    seen: dict[Any, int] = {}
    problems = []
    for i, item in enumerate(alerts if isinstance(alerts, list) else []):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            problems.append(f"alerts[{i}].name: duplicate name {name!r} (alerts[{seen[name]}] has it)")
        elif name in taken:
            problems.append(f"alerts[{i}].name: {name!r} is already the name of sinks[{taken[name]}]")
        seen.setdefault(name, i)
    return problems


def secret_values(cfg: Any) -> list[str]:
    """Values of an alert target's config that must never reach a log line: tokens, secrets, passwords, and the
    Slack webhook URL (the URL is the credential; its path alone too, as it may appear without the host)."""
    found: list[str] = []
    if isinstance(cfg, DingTalkTargetConfig):
        found += [cfg.access_token, cfg.secret or ""]
    if isinstance(cfg, SlackTargetConfig):
        found.append(cfg.webhook_url)
        path = urlsplit(cfg.webhook_url).path
        if path.count("/") >= 2:
            found.append(path)
    if isinstance(cfg, HttpAuthConfigBase):
        found.append(cfg.bearer_token or "")
        if cfg.basic_auth is not None:
            found.append(cfg.basic_auth.password)
        for header, value in cfg.headers.items():
            if header.lower() in ("authorization", "proxy-authorization") or "key" in header.lower() or "token" in header.lower():
                found.append(value)
    return [v for v in found if v]

"""Alert records as targets show or store them: decoding, times, keys, display fields, Falco's JSON.

Pure functions (no I/O, no clock except where a caller passes one in), shared by every alert target:
the chat targets (dingtalk, slack) render `display_fields`, Alertmanager and the webhook build labels
from `alert_key` and times from `parse_time_ns`, and the record targets (file, sls, loki, s3 with
`format: falco`) store `falco_record`.

Falco-compatible JSON (what falcosidekick reads from Falco's `json_output`):

    {"time": "2026-11-22T10:00:00.123456000Z", "rule": "exec-into-container", "priority": "Warning",
     "source": "k8s_audit", "hostname": "<node>", "output": "<time>: <Priority> <summary> (k=v ...)",
     "output_fields": {...}, "tags": [...]}

Priority from severity (Falco's names, as falcosidekick parses them; Falco's own k8s_audit rules use
Warning for exec/attach and Notice/Informational for activity rules, so medium lands where they do):

    critical → Critical    high → Error    medium → Warning    low → Notice    info → Informational

`output_fields` holds the alert's own fields under their names, the well-known ones a second time under
the k8saudit plugin's `ka.*` names (FALCO_FIELDS) so falcosidekick outputs keyed on them work, plus
`ka.auditid` (the first audit ID), `kas.alert_id`, `kas.audit_ids`, `kas.severity`, and for
aggregates `kas.group`, `kas.count`, `kas.window.start`, `kas.window.end`.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import shlex
import time
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from kube_audit_shipper.delivery.contract import Rejected, Request
from kube_audit_shipper.model import SEVERITIES, Alert, alert_decoder

AlertFormat = Literal["alert", "falco"]

FALCO_PRIORITY: dict[str, str] = {"critical": "Critical", "high": "Error", "medium": "Warning", "low": "Notice", "info": "Informational"}
FALCO_SOURCE = "k8s_audit"
#: our field name → the k8saudit plugin's field name (both are kept in output_fields)
FALCO_FIELDS: dict[str, str] = {
    "namespace": "ka.target.namespace",
    "name": "ka.target.name",
    "pod": "ka.target.name",
    "resource": "ka.target.resource",
    "subresource": "ka.target.subresource",
    "verb": "ka.verb",
    "user": "ka.user.name",
    "groups": "ka.user.groups",
    "impersonated_user": "ka.impuser.name",
    "user_agent": "ka.useragent",
    "source_ip": "ka.sourceips",
    "code": "ka.response.code",
    "uri": "ka.uri",
}
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}  # 0 = most severe
MAX_FIELD_CHARS = 512  # one displayed field value; the rest is cut with "…"
INVALID = "invalid_alert"  # Request.meta key of a request standing for a record that is no alert

_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})\Z")
_ENCODE = msgspec.json.Encoder().encode


def decode(record: bytes) -> Alert | str:
    """The Alert a record holds, or why it is not one (the reason a target dead-letters it with)."""
    try:
        return alert_decoder.decode(record)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"invalid_alert: not an alert record: {str(exc)[:200]}"


class InvalidAlertError(Exception):
    """Raised by a target's `send` for a request that stands for a record which is no alert (nothing is sent)."""


def invalid_requests(bad: dict[int, str]) -> list[Request]:
    """One request per record that is no alert: `send` refuses it without any I/O and `classify` rejects it
    with the reason, so the record is dead-lettered and the rest of the batch goes on."""
    return [Request(payload=b"", indices=[i], meta={INVALID: reason}) for i, reason in sorted(bad.items())]


def refuse_invalid(request: Request) -> None:
    reason = request.meta.get(INVALID)
    if reason is not None:
        raise InvalidAlertError(reason)


def invalid_outcome(request: Request, result: object) -> Rejected | None:
    """Rejected for a request of records that are no alerts (`refuse_invalid` refuses to send it), whatever the
    answer; None for any other request."""
    reason = request.meta.get(INVALID)
    return None if reason is None else Rejected(str(reason), list(request.indices))


def decode_all(records: Sequence[bytes]) -> tuple[list[tuple[int, Alert]], dict[int, str]]:
    """(position, Alert) for every record that is one, and position → reason for those that are not."""
    good: list[tuple[int, Alert]] = []
    bad: dict[int, str] = {}
    for i, record in enumerate(records):
        alert = decode(record)
        if isinstance(alert, str):
            bad[i] = alert
        else:
            good.append((i, alert))
    return good, bad


# -- times ---------------------------------------------------------------------------------------------------
def parse_time_ns(text: str) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time (0 to 9 fraction digits, Z or an offset); None if it is not one."""
    m = _TIME.match(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m[i]) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        return None
    try:
        seconds = calendar.timegm((year, month, day, hour, minute, min(second, 59), 0, 0, 0))
    except (OverflowError, ValueError):
        return None
    zone = m[8]
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds * 1_000_000_000 + int((m[7] or "").ljust(9, "0"))


def format_time_ns(ns: int, *, digits: int | None = None) -> str:
    """RFC 3339 UTC: `digits` fraction digits, or (None) as Go's RFC3339Nano prints it (trailing zeros cut)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    text = f"{frac:09d}"
    text = text[:digits] if digits is not None else text.rstrip("0")
    return f"{head}.{text}Z" if text else f"{head}Z"


# -- identity and display ------------------------------------------------------------------------------------
def alert_key(alert: Alert) -> str:
    """The alert's stable id (`Alert.id`), or, when detection left it empty, one derived from what makes it this detection."""
    if alert.id:
        return alert.id
    parts = [alert.rule, alert.group or "", alert.window.start if alert.window else "", *alert.audit_ids]
    if not alert.audit_ids and alert.window is None:
        parts.append(alert.time)
    return hashlib.sha1("\x00".join(parts).encode(), usedforsecurity=False).hexdigest()[:16]


def severity_rank(severity: str) -> int:
    return SEVERITY_RANK.get(severity, len(SEVERITIES))


def display_value(value: Any, *, limit: int = MAX_FIELD_CHARS) -> str | None:
    """A field value as one line of text (None: nothing to show). A list of strings is joined as a shell
    command line would be written (an exec command `["sh", "-c", "id"]` shows as `sh -c id`)."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float, str)):
        text = str(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = shlex.join(value)
    else:
        text = _ENCODE(value).decode()
    text = " ".join(text.split())  # one line: no newline can break a message's layout
    return text if len(text) <= limit else text[: limit - 1] + "…"


def display_fields(alert: Alert, *, limit: int = MAX_FIELD_CHARS) -> list[tuple[str, str]]:
    """(name, text) of the alert's output fields worth showing, in the rule's order, then the aggregate's count and window."""
    out = []
    for name, value in alert.fields.items():
        text = display_value(value, limit=limit)
        if text is not None:
            out.append((str(name), text))
    if alert.count is not None:
        out.append(("count", str(alert.count)))
    if alert.window is not None:
        out.append(("window", f"{alert.window.start} – {alert.window.end} ({alert.window.seconds:g} s)"))
    return out


def description(alert: Alert, *, limit: int = MAX_FIELD_CHARS) -> str:
    """Plain text, one `name: value` per line: the fields, then the audit IDs and tags."""
    lines = [f"{name}: {text}" for name, text in display_fields(alert, limit=limit)]
    if alert.audit_ids:
        lines.append(f"audit_ids: {display_value(', '.join(alert.audit_ids), limit=limit)}")
    if alert.tags:
        lines.append(f"tags: {display_value(', '.join(alert.tags), limit=limit)}")
    return "\n".join(lines)


# -- Falco ---------------------------------------------------------------------------------------------------
def falco_record(alert: Alert, *, hostname: str) -> dict[str, Any]:
    """The alert as Falco's JSON output (see the module docstring)."""
    ns = parse_time_ns(alert.time)
    stamp = format_time_ns(ns, digits=9) if ns is not None else alert.time
    priority = FALCO_PRIORITY.get(alert.severity, "Warning")
    fields: dict[str, Any] = dict(alert.fields)
    for name, falco_name in FALCO_FIELDS.items():
        if name in alert.fields and falco_name not in fields:
            fields[falco_name] = alert.fields[name]
    fields["ka.auditid"] = alert.audit_ids[0] if alert.audit_ids else None
    fields["kas.alert_id"] = alert_key(alert)
    fields["kas.audit_ids"] = list(alert.audit_ids)
    fields["kas.severity"] = alert.severity
    if alert.group is not None:
        fields["kas.group"] = alert.group
    if alert.count is not None:
        fields["kas.count"] = alert.count
    if alert.window is not None:
        fields["kas.window.start"], fields["kas.window.end"] = alert.window.start, alert.window.end
    pairs = " ".join(f"{name}={text}" for name, text in display_fields(alert))
    head = stamp[:-1] + "+0000" if stamp.endswith("Z") else stamp  # Falco's time_format_iso_8601 form
    output = f"{head}: {priority} {alert.summary}" + (f" ({pairs})" if pairs else "")
    return {
        "time": stamp,
        "rule": alert.rule,
        "priority": priority,
        "source": FALCO_SOURCE,
        "hostname": alert.node or hostname,
        "output": output,
        "output_fields": fields,
        "tags": list(alert.tags),
    }


def convert(records: Sequence[bytes], fmt: AlertFormat, *, hostname: str) -> tuple[list[bytes], dict[int, str]]:
    """Records in `fmt`, position for position (a record that is no alert is kept as is and named in the
    second value with its reason). `alert`: the record itself, byte for byte, once it decodes as an Alert."""
    out: list[bytes] = []
    bad: dict[int, str] = {}
    for i, record in enumerate(records):
        alert = decode(record)
        if isinstance(alert, str):
            bad[i] = alert
            out.append(record)
        elif fmt == "falco":
            out.append(_ENCODE(falco_record(alert, hostname=hostname)))
        else:
            out.append(record)
    return out, bad

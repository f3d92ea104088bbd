"""Object keys from the key template, time partitions, and each event's time.

A key is decided once, when an object is started, from the object's FIRST event: strftime directives and
`{first_ts}` take that event's `stageTimestamp` (UTC; else `requestReceivedTimestamp`, else v1beta1's
`timestamp`; an event with none takes the time of the event before it in the batch, the first one the clock), `{seq}` is `<persistent counter, 6+ digits>-<8 random hex digits>` (the counter survives restarts in the
staging directory; the random part keeps keys unique even when the state directory is lost or two agents share
a node name), `{node}` is the node name, and any other `{name}` comes from `key_fields` or else from the first
event's top-level string field of that name (`enrich.static_fields: {cluster_id: …}` puts one there).

Any valid JSON object gets a key: an event nested deeper than msgspec goes is read member by member
(`object_members`, which never recurses), and a time or field that cannot be read counts as absent (a
time out of the calendar's range in UTC, a field that is not a string).

The *partition* of a time is the value of the template's strftime directives (e.g. `2026|11|22|10` for
`dt=%Y-%m-%d/hour=%H`): an object holds one partition, so objects also rotate when it changes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

import msgspec

from kube_audit_shipper.jsonscan import object_members
from kube_audit_shipper.sinks.s3.config import BUILTIN_PLACEHOLDERS

log = logging.getLogger(__name__)

_PIECE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}|(%[A-Za-z%])")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._=-]{1,128}$")
FIRST_TS_FORMAT = "%Y%m%dT%H%M%SZ"
UNKNOWN_FIELD = "unknown"


class _Times(msgspec.Struct):
    stageTimestamp: datetime | None = None  # the audit Event's field names
    requestReceivedTimestamp: datetime | None = None
    timestamp: datetime | None = None  # audit.k8s.io/v1beta1 events before 1.13


_times = msgspec.json.Decoder(_Times)
_time = msgspec.json.Decoder(datetime)
_text = msgspec.json.Decoder(str)


def event_time(record: bytes) -> datetime | None:
    """The event's stageTimestamp (else requestReceivedTimestamp, else v1beta1 timestamp) in UTC, or None."""
    try:
        t = _times.decode(record)
    except RecursionError:  # nested deeper than msgspec goes (it cannot skip the bodies): member by member
        t = _times_of(record)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    ts = t.stageTimestamp or t.requestReceivedTimestamp or t.timestamp
    if ts is None:
        return None
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    try:
        return ts.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 in a zone that moves it out of range
        return None


def _times_of(record: bytes) -> _Times:
    try:
        top = object_members(record) or {}
    except msgspec.DecodeError:
        top = {}
    found: dict[str, datetime] = {}
    for name in _Times.__struct_fields__:
        raw = top.get(name)
        if raw is not None:
            try:
                found[name] = _time.decode(raw)
            except (msgspec.DecodeError, RecursionError):
                continue
    return _Times(**found)


def _string(raw: msgspec.Raw | None) -> str | None:
    if raw is None:
        return None
    try:
        return _text.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None


def safe_value(value: object) -> str:
    """A placeholder value fit for a key segment: [A-Za-z0-9._=-], anything else percent-encoded."""
    if not isinstance(value, str) or not value:
        return UNKNOWN_FIELD
    if _SAFE_VALUE.match(value):
        return value
    return quote(value, safe="._=-")[:256]


class KeyTemplate:
    """A parsed key template bound to this node and the sink's key_fields."""

    def __init__(self, template: str, *, node: str, fields: Mapping[str, str]) -> None:
        self.template = template
        self.node = safe_value(node)
        self.fields = dict(fields)
        self._pieces: list[tuple[str, str]] = []  # (kind, text): kind in lit, time, ph
        pos = 0
        for m in _PIECE.finditer(template):
            if m.start() > pos:
                self._pieces.append(("lit", template[pos : m.start()]))
            if m.group(1) is not None:
                self._pieces.append(("ph", m.group(1)))
            elif m.group(2) == "%%":
                self._pieces.append(("lit", "%"))
            else:
                self._pieces.append(("time", m.group(2)))
            pos = m.end()
        if pos < len(template):
            self._pieces.append(("lit", template[pos:]))
        names = [text for kind, text in self._pieces if kind == "ph"]
        #: placeholders whose value is read from the object's first event
        self.event_fields: tuple[str, ...] = tuple(dict.fromkeys(n for n in names if n not in BUILTIN_PLACEHOLDERS and n not in self.fields))
        directives = [text for kind, text in self._pieces if kind == "time"]
        self._partition_format = "|".join(directives)
        #: seconds within which the partition cannot change (UTC has no DST: day-based directives change at midnight)
        self.granularity_s = 1 if "%S" in directives else 60 if "%M" in directives else 3600 if "%H" in directives else 86400
        self.has_node = "node" in names

    # -- partitions ------------------------------------------------------------------------------
    def partition(self, t: datetime) -> str:
        return t.strftime(self._partition_format) if self._partition_format else ""

    # -- rendering -------------------------------------------------------------------------------
    def _static(self, name: str) -> str | None:
        if name == "node":
            return self.node
        return self.fields.get(name)

    def render(self, first_time: datetime, seq: str, event_values: Mapping[str, str]) -> str:
        out = []
        for kind, text in self._pieces:
            if kind == "lit":
                out.append(text)
            elif kind == "time":
                out.append(first_time.strftime(text))
            elif text == "first_ts":
                out.append(first_time.strftime(FIRST_TS_FORMAT))
            elif text == "seq":
                out.append(seq)
            else:
                static = self._static(text)
                out.append(static if static is not None else event_values.get(text, UNKNOWN_FIELD))
        return "".join(out)

    def values_from_event(self, record: bytes) -> dict[str, str]:
        """The event-field placeholders' values, from one event (its top-level string fields)."""
        if not self.event_fields:
            return {}
        try:
            top = object_members(record) or {}
        except msgspec.DecodeError:
            top = {}
        return {name: safe_value(_string(top.get(name))) for name in self.event_fields}

    def list_prefix(self) -> str:
        """The fixed start of every key this sink writes: where to look for its incomplete uploads."""
        out = []
        for kind, text in self._pieces:
            if kind == "lit":
                out.append(text)
                continue
            static = self._static(text) if kind == "ph" else None
            if static is None:
                break
            out.append(static)
        return "".join(out)

    def ours(self) -> re.Pattern[str] | None:
        """A pattern matching every key this node's sink can have written; None without {node} in the template."""
        if not self.has_node:
            return None
        parts = []
        for kind, text in self._pieces:
            if kind == "lit":
                parts.append(re.escape(text))
            elif kind == "time":
                parts.append(r"[^/]+?")
            elif text == "first_ts":
                parts.append(r"\d{8}T\d{6}Z")
            elif text == "seq":
                parts.append(r"\d{6,}-[0-9a-f]{8}")
            else:
                static = self._static(text)
                parts.append(re.escape(static) if static is not None else r"[^/]+?")
        return re.compile("".join(parts))


def format_seq(counter: int, rand: int) -> str:
    return f"{counter:06d}-{rand:08x}"

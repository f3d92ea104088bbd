"""What the Loki sink reads from an event: a few fields, the timestamp in nanoseconds, and an oversize trim.

Each record is decoded once, into a Struct built for the configured fields only (msgspec skips the rest,
bodies included, without building them). An event that does not fit (a field of an unexpected type, such as
a string `user`; a number out of range; a value nested deeper than msgspec goes, which it cannot even skip)
is read again member by member along the same paths (`object_members`, which never recurses): a value that
cannot be read is absent, and the entry is shipped all the same.

Timestamp: `stageTimestamp`, else `requestReceivedTimestamp`, else the v1beta1 `timestamp`, read with
nanosecond precision (RFC 3339 with `Z` or an offset, a space instead of `T`, 0 to 9 fraction digits, no
zone read as UTC); one with an impossible offset, before 1970 or past 2262 (what Loki's nanoseconds hold)
does not count. An event
with none of them gets the time it is encoded at.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import Raw

from kube_audit_shipper.jsonscan import object_members

_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})?")
_TS_FIELDS = ("stageTimestamp", "requestReceivedTimestamp", "timestamp")
_ANY = msgspec.json.Decoder()
_MAX_NS = 1 << 63  # Loki's timestamps are int64 nanoseconds
_ENCODE = msgspec.json.Encoder().encode
TRIM_ANNOTATION = "kube-audit-shipper/trimmed"
_BODIES = ("requestObject", "responseObject")
_BIG_FIELD_BYTES = 1024


class FieldReader:
    """`read(record) -> (values, timestamp_ns)` for a fixed list of field paths (see fields.FIELDS)."""

    def __init__(self, paths: list[tuple[str, ...]]) -> None:
        self.paths = paths
        tree: dict[str, Any] = dict.fromkeys(_TS_FIELDS)
        for path in paths:
            node = tree
            for key in path[:-1]:
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
            node.setdefault(path[-1], None)
        struct, attrs = _struct("Event", tree)
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(struct)
        self._getters = [_getter(path, attrs) for path in paths]
        self._ts_attrs = [attrs[key][0] for key in _TS_FIELDS]
        self._minutes: dict[str, int] = {}

    def read(self, record: bytes) -> tuple[list[Any], int]:
        try:
            event: Any = self._decoder.decode(record)
        except (msgspec.ValidationError, RecursionError):  # odd types, numbers or depth: member by member
            try:
                top = object_members(record) or {}
            except msgspec.DecodeError:
                top = {}
            values = [_lookup(top, path) for path in self.paths]
            stamps = [_lookup(top, (key,)) for key in _TS_FIELDS]
        except msgspec.DecodeError:  # not JSON (the pipeline never hands such a record over): a line without fields
            values, stamps = [None] * len(self.paths), []
        else:
            values = [get(event) for get in self._getters]
            stamps = [getattr(event, attr) for attr in self._ts_attrs]
        for text in stamps:
            if isinstance(text, str):
                ns = self.timestamp_ns(text)
                if ns is not None:
                    return values, ns
        return values, time.time_ns()

    def timestamp_ns(self, text: str) -> int | None:
        """Nanoseconds since the epoch; None if `text` is no timestamp. Fast for kube-apiserver's own form."""
        if text[-1:] == "Z" and text[10:11] == "T" and text[16:17] == ":" and (text[19:] == "Z" or text[19:20] == "."):
            minute = self._minutes.get(text[:16])
            sec, frac = text[17:19], text[20:-1]
            if minute is not None and sec.isascii() and sec.isdigit() and sec <= "60" and len(frac) <= 9 and (not frac or (frac.isascii() and frac.isdigit())):
                return (minute + int(sec)) * 1_000_000_000 + int(frac.ljust(9, "0") or 0)
            ns = parse_ns(text)
            if ns is not None and len(self._minutes) < 4096:
                self._minutes[text[:16]] = ns // 1_000_000_000 - int(sec)
            return ns
        return parse_ns(text)


def parse_ns(text: str) -> int | None:
    """Any accepted timestamp form (see the module docstring) as nanoseconds since the epoch."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        secs = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31 and int(hour) < 24 and int(minute) < 60 and int(second) <= 60):
        return None
    if zone is not None and zone not in ("Z", "z"):
        digits = zone[1:].replace(":", "")
        if int(digits[:2]) > 23 or int(digits[2:]) > 59:  # no such zone (`+99:99`): not a timestamp
            return None
        offset = int(digits[:2]) * 3600 + int(digits[2:]) * 60
        secs -= offset if zone[0] == "+" else -offset
    ns = secs * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))
    return ns if 0 <= ns < _MAX_NS else None


def fit_line(record: bytes, limit: int) -> bytes:
    """An event over `limit` bytes, trimmed to Metadata level (no request/response bodies) and annotated.

    If that is still too long, every other top-level field over 1 KiB goes too (named in the annotation).
    The result may still be over the limit only for absurdly small limits; Loki then refuses it (dead letter).
    """
    try:
        top = object_members(record)
    except msgspec.DecodeError:
        top = None
    if top is None:
        return record  # not a JSON object: sent as it is, Loki refuses it, and it is dead-lettered with Loki's reason
    removed = [k for k in _BODIES if top.pop(k, None) is not None]
    if "level" in top:
        top["level"] = Raw(b'"Metadata"')
    annotations = _annotations(top)
    note = f"trimmed to Metadata level: the {len(record)}-byte event is over the Loki line limit of {limit} bytes"
    annotations[TRIM_ANNOTATION] = note
    top["annotations"] = Raw(_ENCODE(annotations))
    out = _ENCODE(top)
    if len(out) <= limit:
        return out
    big = [k for k, v in top.items() if len(v) > _BIG_FIELD_BYTES and k != "annotations"]
    for key in big:
        del top[key]
    if len(top["annotations"]) > limit // 2:
        annotations = {}
    annotations[TRIM_ANNOTATION] = f"{note}; fields over {_BIG_FIELD_BYTES} bytes removed: {', '.join(big + removed)}"
    top["annotations"] = Raw(_ENCODE(annotations))
    return _ENCODE(top)


def _annotations(top: dict[str, Raw]) -> dict[str, Any]:
    """The event's annotations, values kept raw ({} when absent or not an object)."""
    raw = top.get("annotations")
    if raw is None:
        return {}
    try:
        return object_members(raw) or {}
    except msgspec.DecodeError:
        return {}


def _struct(name: str, tree: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """A Struct type for `tree` (key -> None for a leaf of any type, or a subtree), and key -> (attribute, sub-map)."""
    fields: list[tuple[str, Any, Any]] = []
    attrs: dict[str, Any] = {}
    for i, (key, sub) in enumerate(tree.items()):
        attr = f"f{i}"
        if sub is None:
            fields.append((attr, Any, msgspec.field(default=None, name=key)))
            attrs[key] = (attr, None)
        else:
            sub_type, sub_attrs = _struct(f"{name}_{i}", sub)
            fields.append((attr, sub_type | None, msgspec.field(default=None, name=key)))
            attrs[key] = (attr, sub_attrs)
    return msgspec.defstruct(name, fields, kw_only=True), attrs


def _getter(path: tuple[str, ...], attrs: dict[str, Any]) -> Callable[[Any], Any]:
    names = []
    for key in path:
        attr, attrs = attrs[key]
        names.append(attr)

    def get(event: Any) -> Any:
        node = event
        for name in names:
            if node is None:
                return None
            node = getattr(node, name)
        return node

    return get


def _lookup(top: dict[str, Raw], path: tuple[str, ...]) -> Any:
    """The value at `path` in an event split into raw members, one level at a time; None if it cannot be read."""
    node: dict[str, Raw] | None = top
    for key in path[:-1]:
        raw = node.get(key) if node is not None else None
        if raw is None:
            return None
        try:
            node = object_members(raw)
        except msgspec.DecodeError:
            return None
    raw = node.get(path[-1]) if node is not None else None
    if raw is None:
        return None
    try:
        return _ANY.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None

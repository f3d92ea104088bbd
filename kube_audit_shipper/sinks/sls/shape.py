"""One audit event → one SLS log, shaped as Logtail's JSON mode shapes it, so ACK's queries work unchanged.

Logtail's JSON parser (`RapidjsonValueToString`, loongcollector `ProcessorParseJsonNative.cpp`) makes every
*top-level* key a content: a string as its text, a number as its digits, true/false as `true`/`false`, null as
the empty string, and an object or array as compact JSON. ACK's logstore then serves `user.username`,
`objectRef.subresource`, `"responseStatus.code"` and `"annotations.authorization.k8s.io/reason"` through JSON
indexes on `user`, `objectRef`, `responseStatus`, `annotations`. Enrichment fields (`cluster_id`, `node`,
`derived`) are top-level keys like the rest.

`__time__` is the event's own time: `stageTimestamp`, else `requestReceivedTimestamp`, else `timestamp` (old
v1beta1), with its nanoseconds; only an event with none of them gets the time it is encoded at.

An event with a value over the per-value limit, or too big for one request, is trimmed to Metadata level
(`requestObject` and `responseObject` removed, `level` rewritten) and annotated under
`annotations["kube-audit-shipper.io/truncated"]` with what was removed and why. Should a value still be too
large, it is cut (marked at its end) and named in the annotation: the event is never lost.

Any valid JSON object is shaped, however deep or odd: its top level is split without recursing
(`object_members`, which falls back to an iterative scan past msgspec's nesting limit), and a value too deep
to compact is stored as recorded (kube-apiserver writes compact JSON already).
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from kube_audit_shipper.jsonscan import object_members
from kube_audit_shipper.sinks.sls import pb

TRUNCATED_ANNOTATION = "kube-audit-shipper.io/truncated"
BODY_KEYS = (b"requestObject", b"responseObject")
TIME_KEYS = ("stageTimestamp", "requestReceivedTimestamp", "timestamp")
#: a value cut to fit ends with this (plus the count of bytes removed)
CUT_MARK = "...[cut by kube-audit-shipper: {n} bytes]"

_STR = msgspec.json.Decoder(str)
_ENC = msgspec.json.Encoder()
_TS = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})?")
_SECONDS_CACHE: dict[str, int] = {}


class NotAnEvent(ValueError):
    """The record is not a JSON object (cannot happen for records the pipeline produced)."""


def parse_time(text: str) -> tuple[int, int] | None:
    """(unix seconds, nanoseconds) of an RFC 3339 timestamp (zone optional, read as UTC); None if unreadable."""
    m = _TS.fullmatch(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    prefix = text[:19] if zone in (None, "Z", "z") else None
    secs = _SECONDS_CACHE.get(prefix) if prefix else None
    if secs is None:
        try:
            secs = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, 0))
        except (ValueError, OverflowError):
            return None
        if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31 and int(hour) < 24 and int(minute) < 60 and int(second) < 61):
            return None
        if zone not in (None, "Z", "z"):
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            if int(digits[:2]) > 23 or int(digits[2:]) > 59:  # no such zone (`+99:99`): not a timestamp
                return None
            secs -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
        elif prefix is not None:
            if len(_SECONDS_CACHE) > 4096:
                _SECONDS_CACHE.clear()
            _SECONDS_CACHE[prefix] = secs
    nanos = int((fraction or "0").ljust(9, "0")) if fraction else 0
    if not 0 <= secs <= 0xFFFFFFFF:
        return None
    return secs, nanos


def raw_to_value(raw: bytes) -> bytes:
    """A top-level JSON value as Logtail's JSON mode stores it (UTF-8 bytes)."""
    first = raw[:1]
    if first == b'"':
        if b"\\" not in raw:
            return raw[1:-1]
        return _STR.decode(raw).encode()
    if first in (b"{", b"["):
        try:
            return msgspec.json.format(raw, indent=-1)
        except RecursionError:  # nested deeper than msgspec goes: as recorded
            return raw
    if first == b"n":
        return b""
    return raw  # numbers, true, false: their JSON text


@dataclass(slots=True)
class Shaped:
    """One event as SLS contents, with its time."""

    contents: list[tuple[bytes, bytes]]
    time_s: int
    time_ns: int
    timed: bool  # False: no usable timestamp in the event (time is the encode time)
    note: str | None = None  # set when the event was trimmed or cut
    max_value: int = -1  # length of the longest value (-1: not known)
    payload: int = -1  # sum of key and value lengths (-1: not known)


def shape(record: bytes, *, now: float | None = None) -> Shaped:
    """Contents and time of one event record (one JSON object)."""
    try:
        top = object_members(record)
    except msgspec.DecodeError as exc:
        raise NotAnEvent(str(exc)) from exc
    if top is None:
        raise NotAnEvent("not a JSON object")
    contents: list[tuple[bytes, bytes]] = []
    times: dict[str, bytes] = {}
    longest = payload = 0
    for key, raw in top.items():
        value = raw_to_value(bytes(raw))
        n = len(value)
        payload += n + len(key)
        longest = max(longest, n)
        if key in TIME_KEYS:
            times[key] = value
        contents.append((key.encode(), value))
    for key in TIME_KEYS:
        text = times.get(key)
        if text:
            parsed = parse_time(text.decode(errors="replace"))
            if parsed is not None:
                return Shaped(contents, parsed[0], parsed[1], True, None, longest, payload)
    t = time.time() if now is None else now
    return Shaped(contents, int(t), int((t % 1) * 1e9), False, None, longest, payload)


def log_size(shaped: Shaped, with_ns: bool) -> int:
    """Serialized size of the Log message (exact)."""
    n = 1 + len(pb.varint(shaped.time_s)) + (5 if with_ns else 0)
    for k, v in shaped.contents:
        inner = 2 + len(pb.varint(len(k))) + len(k) + len(pb.varint(len(v))) + len(v)
        n += 1 + len(pb.varint(inner)) + inner
    return n


def _cut(value: bytes, limit: int) -> bytes:
    """`value` cut to at most `limit` bytes at a UTF-8 boundary, ending with the cut mark."""
    keep = max(0, limit - len(CUT_MARK.format(n=len(value)).encode()))
    while 0 < keep < len(value) and (value[keep] & 0xC0) == 0x80:  # do not split a UTF-8 sequence
        keep -= 1
    return value[:keep] + CUT_MARK.format(n=len(value) - keep).encode()


def fit(shaped: Shaped, *, max_value: int, max_log: int, with_ns: bool, force_metadata: bool = False) -> Shaped:
    """`shaped` itself when every value is within `max_value` and the log within `max_log` bytes; else a trimmed
    copy: Metadata level, annotated, and (if still needed) the largest values cut. `force_metadata` trims even
    an event that looks small enough (the server said it was too large)."""
    longest = shaped.max_value if shaped.max_value >= 0 else max((len(v) for _, v in shaped.contents), default=0)
    # 20 bytes per content bound its protobuf framing (tag, lengths), 16 the time fields
    bound = shaped.payload + 20 * len(shaped.contents) + 16 if shaped.payload >= 0 else max_log + 1
    too_big = force_metadata or longest > max_value or (bound > max_log and log_size(shaped, with_ns) > max_log)
    if not too_big:
        return shaped
    removed = []
    contents = []
    level = None
    for k, v in shaped.contents:
        if k in BODY_KEYS:
            removed.append(f"{k.decode()} ({len(v)} bytes)")
            continue
        if k == b"level":
            level = v.decode(errors="replace")
        contents.append((k, v))
    why = (
        f"over the SLS per-value limit of {max_value} bytes"
        if any(len(v) > max_value for _, v in shaped.contents)
        else f"too large for one SLS request ({max_log} bytes)"
    )
    if force_metadata:
        why = "rejected by SLS as too large (PostBodyTooLarge)"
    parts = []
    if removed:
        parts.append(f"trimmed to Metadata level{f' from {level}' if level else ''}: removed " + ", ".join(removed))
    # cut what is still too large, largest first, until it fits (keeping room for the annotation)
    result = Shaped(contents, shaped.time_s, shaped.time_ns, shaped.timed)
    cut_names = []
    reserve = 1024
    for i in sorted(range(len(contents)), key=lambda j: -len(contents[j][1])):
        k, v = contents[i]
        limit = max_value - (reserve if k == b"annotations" else 0)  # the note goes into annotations
        over_value = len(v) > limit
        excess = log_size(result, with_ns) + reserve - max_log
        if not over_value and excess <= 0:
            continue
        target = limit if over_value else len(v)
        if excess > 0:
            target = min(target, max(256, len(v) - excess))
        if target < len(v):
            contents[i] = (k, _cut(v, target))
            cut_names.append(f"{k.decode()} ({len(v)} bytes)")
    if cut_names:
        parts.append("cut to fit: " + ", ".join(cut_names))
    note = f"sls: {'; '.join(parts) or 'trimmed'} ({why})"
    _annotate(contents, note, level_present=level is not None and bool(removed))
    result.note = note
    return result


def _annotate(contents: list[tuple[bytes, bytes]], note: str, *, level_present: bool) -> None:
    """Set level to Metadata (when bodies were removed) and add the note to the annotations object."""
    for i, (k, _v) in enumerate(contents):
        if k == b"level" and level_present:
            contents[i] = (k, b"Metadata")
    for i, (k, v) in enumerate(contents):
        if k == b"annotations":
            try:  # its members stay as they are (raw): only the note is added
                ann: dict[str, Any] | None = object_members(v) if v else {}
            except msgspec.DecodeError:
                ann = None
            if ann is not None:
                ann[TRUNCATED_ANNOTATION] = note
                contents[i] = (k, _ENC.encode(ann))
                return
            # annotations was itself cut (not JSON any more): keep it, and say so in a key of its own
            contents.append((b"annotations_truncated", note.encode()))
            return
    contents.append((b"annotations", _ENC.encode({TRUNCATED_ANNOTATION: note})))

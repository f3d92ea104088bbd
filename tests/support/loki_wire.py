"""Loki's push wire formats for the test server: the official push schema, request bodies, and how Loki prints.

`push_request_class()` builds `logproto.PushRequest` from the field list of grafana/loki `pkg/push/push.proto`
as a descriptor for the protobuf library (no generated code, no gogoproto options: they do not change the wire
format); `decode_push` reads a body as Loki's ParseLokiRequest does (Content-Encoding, media type, snappy block
format, protobuf or JSON) and fails with Loki's messages. `parse_labels` reads a stream's label set as
syntax.ParseLabels does, with its `1:col: parse error: ...` texts; `go_quote`, `go_time`, `rfc3339`, `datasize`
and `grouped` print as Loki's Go code does; `TokenBucket` limits as golang.org/x/time/rate does, on a `Clock`
that tests can freeze (`ManualClock`).
"""

from __future__ import annotations

import gzip
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cramjam
import msgspec
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.message import DecodeError


@dataclass(frozen=True)
class Entry:
    ts_ns: int
    line: str
    metadata: tuple[tuple[str, str], ...] = ()


class Clock:
    """Wall time (timestamps' age) and a monotonic clock (rate limits); ManualClock freezes both."""

    def wall_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock(Clock):
    """Time moves only by `advance`, and by `step_s` on every rate-limiter reading (so each push refills a known amount)."""

    def __init__(self, wall_ns: int | None = None, *, step_s: float = 0.0) -> None:
        self._wall = time.time_ns() if wall_ns is None else wall_ns
        self._mono = 0.0
        self.step_s = step_s

    def wall_ns(self) -> int:
        return self._wall

    def monotonic(self) -> float:
        self._mono += self.step_s
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += int(seconds * 1e9)
        self._mono += seconds


class TokenBucket:
    """golang.org/x/time/rate AllowN: full at start; a request over the burst is never allowed."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.last = float(burst), clock.monotonic()

    def allow(self, n: int) -> bool:
        now = self.clock.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if n > self.burst or n > self.tokens:
            return False
        self.tokens -= n
        return True


class Reject(Exception):
    """An answer other than 204: status and Loki's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- Go formatting, as in Loki's messages --------------------------------------------------------------
def go_quote(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
    return "".join(out) + '"'


def labels_string(labels: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{k}={go_quote(v)}" for k, v in sorted(labels)) + "}"


def rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_time(ns: int) -> str:
    """Go's Time.String() in UTC: `2026-11-22 08:14:55.882227707 +0000 UTC` (fraction without trailing zeros)."""
    base = datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    frac = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return f"{base}{'.' + frac if frac else ''} +0000 UTC"


def datasize(n: float) -> str:
    """flagext.ByteSize (c2h5oh/datasize): the largest unit that divides exactly, `64KB`, `61441B`."""
    n = int(n)
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


# -- label sets: the LogQL parser's answers for what a push can carry -----------------------------------------
class LabelError(ValueError):
    pass


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}


def parse_labels(text: str) -> list[tuple[str, str]]:
    """`{name="value", ...}` as Loki's syntax.ParseLabels reads it; LabelError carries Loki's `1:col: …` text."""
    i, n = 0, len(text)

    def fail(pos: int, what: str) -> LabelError:
        return LabelError(f"1:{pos + 1}: parse error: {what}")

    def skip(j: int) -> int:
        while j < n and text[j] in " \t\r\n":
            j += 1
        return j

    def ident(j: int) -> int:
        k = j
        while k < n and (text[k].isascii() and (text[k].isalnum() or text[k] == "_")) and not (k == j and text[k].isdigit()):
            k += 1
        return k

    i = skip(i)
    if i >= n or text[i] != "{":
        raise fail(i, "syntax error: unexpected " + (repr(text[i]) if i < n else "$end") + ", expecting {")
    i = skip(i + 1)
    labels: list[tuple[str, str]] = []
    while i < n and text[i] != "}":
        j = ident(i)
        if j == i:
            raise fail(i, f"unexpected character inside braces: '{text[i]}'")
        name, i = text[i:j], skip(j)
        if i >= n or text[i] != "=":
            raise fail(i, f"unexpected character inside braces: '{text[i]}'" if i < n else "syntax error: unexpected $end")
        i = skip(i + 1)
        if i < n and text[i] == '"':
            value, i = _go_string(text, i, fail)
        elif ident(i) > i:
            raise fail(i, f'unexpected identifier "{text[i : ident(i)]}" in label set, expected string')
        else:
            raise fail(i, f"unexpected character inside braces: '{text[i]}'" if i < n else "syntax error: unexpected $end")
        labels.append((name, value))
        i = skip(i)
        if i < n and text[i] == ",":
            i = skip(i + 1)
        elif i >= n or text[i] != "}":
            raise fail(i, "syntax error: unexpected " + (repr(text[i]) if i < n else "$end") + ", expecting } or ,")
    if i >= n or skip(i + 1) != n:
        raise fail(min(i, n), "syntax error: unexpected $end, expecting }")
    return [(k, v) for k, v in labels if v]


def _go_string(text: str, i: int, fail: Callable[[int, str], LabelError]) -> tuple[str, int]:
    out, j = bytearray(), i + 1
    while j < len(text) and text[j] != '"':
        ch = text[j]
        if ch == "\n":
            raise fail(j, "literal not terminated")
        if ch != "\\":
            out += ch.encode()
            j += 1
            continue
        esc = text[j + 1 : j + 2]
        if esc in _ESCAPES:
            out += _ESCAPES[esc].encode()
            j += 2
        elif esc in ("x", "u", "U") or esc.isdigit():
            width = {"x": 2, "u": 4, "U": 8}.get(esc, 3)
            start = j + (1 if esc.isdigit() else 2)
            digits = text[start : start + width]
            try:
                code = int(digits, 8 if esc.isdigit() else 16)
            except ValueError:
                raise fail(j, "invalid syntax") from None
            out += bytes([code]) if esc == "x" or esc.isdigit() else chr(code).encode()
            j = start + width
        else:
            raise fail(j, "invalid syntax")
    if j >= len(text):
        raise fail(j, "literal not terminated")
    return out.decode("utf-8", "replace"), j + 1


def grouped(errors: list[str]) -> str:
    counts = Counter(errors)
    return "; ".join((f"{n} errors like: " if len(counts) > 1 or n > 1 else "") + msg for msg, n in counts.items())


# -- the official push schema, as a descriptor for the protobuf library ------------------------------------------
def push_request_class() -> Any:
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="pkg/push/push.proto", package="logproto", syntax="proto3", dependency=["google/protobuf/timestamp.proto"])
    spec = {
        "PushRequest": [("streams", 1, f.TYPE_MESSAGE, ".logproto.StreamAdapter", True), ("format", 2, f.TYPE_STRING, "", False)],
        "StreamAdapter": [
            ("labels", 1, f.TYPE_STRING, "", False),
            ("entries", 2, f.TYPE_MESSAGE, ".logproto.EntryAdapter", True),
            ("hash", 3, f.TYPE_UINT64, "", False),
        ],
        "LabelPairAdapter": [("name", 1, f.TYPE_STRING, "", False), ("value", 2, f.TYPE_STRING, "", False)],
        "EntryAdapter": [
            ("timestamp", 1, f.TYPE_MESSAGE, ".google.protobuf.Timestamp", False),
            ("line", 2, f.TYPE_STRING, "", False),
            ("structuredMetadata", 3, f.TYPE_MESSAGE, ".logproto.LabelPairAdapter", True),
            ("parsed", 4, f.TYPE_MESSAGE, ".logproto.LabelPairAdapter", True),
        ],
    }
    for name, fields in spec.items():
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, type_name, repeated in fields:
            msg.field.add(
                name=fname, number=number, type=ftype, type_name=type_name or None, label=f.LABEL_REPEATED if repeated else f.LABEL_OPTIONAL, json_name=fname
            )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))


def decode_push(headers: dict[str, str], body: bytes, message_class: Any) -> list[tuple[str, list[Entry]]]:
    encoding = headers.get("content-encoding", "")
    try:
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body, -15)
        elif encoding not in ("", "snappy"):
            raise Reject(400, f'Content-Encoding "{encoding}" not supported')
    except (OSError, EOFError, zlib.error) as exc:
        raise Reject(400, f"{encoding}: {exc}") from None
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if not media:
        raise Reject(400, "mime: no media type")
    if not body:
        raise Reject(400, "EOF")
    if media == "application/json":
        return decode_json(body)
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body))
    except Exception:
        raise Reject(400, "snappy: corrupt input") from None
    message = message_class()
    try:
        message.ParseFromString(raw)
    except DecodeError as exc:
        raise Reject(400, f"proto: {exc}") from None
    return [
        (s.labels, [Entry(e.timestamp.seconds * 10**9 + e.timestamp.nanos, e.line, tuple((p.name, p.value) for p in e.structuredMetadata)) for e in s.entries])
        for s in message.streams
    ]


def decode_json(body: bytes) -> list[tuple[str, list[Entry]]]:
    prefix = "loghttp.PushRequest.Streams: []loghttp.LogProtoStream: "
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise Reject(400, f"{prefix}Skip: do not know how to skip: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("streams", []), list):
        raise Reject(400, f"{prefix}ReadArrayCB: expect [ or n, but found {str(doc)[:20]}")
    out = []
    for stream in doc.get("streams") or []:
        labels = stream.get("stream") if isinstance(stream, dict) else None
        values = stream.get("values") if isinstance(stream, dict) else None
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()) or not isinstance(values, list):
            raise Reject(400, f"{prefix}ReadMapCB: expect {{ or n, but found {str(stream)[:20]}")
        entries = []
        for v in values:
            ok = isinstance(v, list) and len(v) in (2, 3) and all(isinstance(x, str) for x in v[:2])
            ok = ok and (len(v) == 2 or (isinstance(v[2], dict) and all(isinstance(x, str) for x in v[2].values())))
            if not ok:
                raise Reject(400, f"{prefix}Entries: unmarshalerDecoder: Value looks like Number/Boolean/None, but can't find its end: {str(v)[:40]}")
            if not v[0].isdigit():
                raise Reject(400, f'strconv.ParseInt: parsing "{v[0]}": invalid syntax')
            entries.append(Entry(int(v[0]), v[1], tuple(v[2].items()) if len(v) == 3 else ()))
        out.append((labels_string(list(labels.items())), entries))
    return out

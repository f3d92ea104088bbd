"""The PutLogs body: an SLS `LogGroup` (proto2), encoded by hand.

The schema (SLS "Data encoding" doc; the SDK's `aliyun/log/log_logs_pb2.py`; Logtail's `sls_logs.proto`):

    message Log      { required uint32 Time = 1; repeated Content Contents = 2; optional fixed32 Time_ns = 4;
                       message Content { required string Key = 1; required string Value = 2; } }
    message LogTag   { required string Key = 1; required string Value = 2; }
    message LogGroup { repeated Log Logs = 1; optional string Category = 2; optional string Topic = 3;
                       optional string Source = 4; optional string MachineUUID = 5; repeated LogTag LogTags = 6; }

Fields are written in field-number order, as protobuf's own serializer does, so the bytes are identical to the
SDK's `LogGroup.SerializeToString()` for the same content (a test checks that, and decodes with the SDK).
Encoding a log once and reusing its bytes lets the sink measure and split groups exactly without re-encoding.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

_FIXED32 = struct.Struct("<I")


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = tuple(_varint(i) for i in range(1 << 14))
_KEY_HEADS: dict[bytes, bytes] = {}


def varint(n: int) -> bytes:
    return _SMALL[n] if n < 16384 else _varint(n)


def _key_head(key: bytes) -> bytes:
    """`Key` field bytes of a Content (keys repeat across logs: cached)."""
    head = _KEY_HEADS.get(key)
    if head is None:
        head = b"\x0a" + varint(len(key)) + key + b"\x12"
        if len(_KEY_HEADS) < 4096:
            _KEY_HEADS[key] = head
    return head


def _field(tag: int, data: bytes) -> bytes:
    """A length-delimited field (tag byte already shifted: field << 3 | 2)."""
    return bytes((tag,)) + varint(len(data)) + data


def pair(key: bytes, value: bytes) -> bytes:
    """A serialized `Content`/`LogTag` message body: Key = 1, Value = 2."""
    return b"\x0a" + varint(len(key)) + key + b"\x12" + varint(len(value)) + value


def encode_log(time_s: int, time_ns: int | None, contents: Iterable[tuple[bytes, bytes]]) -> bytes:
    """One serialized `Log` message (without the LogGroup field header)."""
    parts = [b"\x08", varint(time_s & 0xFFFFFFFF)]
    small = _SMALL
    for key, value in contents:
        head = _key_head(key)
        n = len(value)
        vlen = small[n] if n < 16384 else _varint(n)
        inner = len(head) + len(vlen) + n
        parts.append(b"\x12")
        parts.append(small[inner] if inner < 16384 else _varint(inner))
        parts.append(head)
        parts.append(vlen)
        parts.append(value)
    if time_ns is not None:
        parts.append(b"\x25")
        parts.append(_FIXED32.pack(time_ns))
    return b"".join(parts)


def log_field_size(log: bytes) -> int:
    """Bytes a serialized Log adds to a LogGroup (field tag + length + message)."""
    return 1 + len(varint(len(log))) + len(log)


def group_header(topic: str | None, source: str | None, tags: Sequence[tuple[str, str]]) -> tuple[bytes, bytes]:
    """(bytes between Logs and LogTags: Topic and Source; LogTags bytes), for `encode_group`."""
    middle = b""
    if topic is not None:
        middle += _field(0x1A, topic.encode())
    if source is not None:
        middle += _field(0x22, source.encode())
    tag_bytes = b"".join(_field(0x32, pair(k.encode(), v.encode())) for k, v in tags)
    return middle, tag_bytes


def encode_group(logs: Sequence[bytes], middle: bytes, tag_bytes: bytes) -> bytes:
    parts = []
    for log in logs:
        parts.append(b"\x0a")
        parts.append(varint(len(log)))
        parts.append(log)
    parts.append(middle)
    parts.append(tag_bytes)
    return b"".join(parts)

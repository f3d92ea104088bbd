"""Loki's push protobuf (`pkg/push/push.proto`, package logproto), written by hand: only what a client sends.

    message PushRequest   { repeated StreamAdapter streams = 1; }
    message StreamAdapter { string labels = 1; repeated EntryAdapter entries = 2; }
    message EntryAdapter  { google.protobuf.Timestamp timestamp = 1; string line = 2;
                            repeated LabelPairAdapter structuredMetadata = 3; }
    message LabelPairAdapter { string name = 1; string value = 2; }
    message Timestamp     { int64 seconds = 1; int32 nanos = 2; }

An entry is kept as parts (`head`, the line itself, structured metadata) so a request body is one join of
already-encoded pieces and the line bytes are copied once; the wrapper of a stream needs the size of its
entries, so it is written when a request is assembled. The tests decode the result with the protobuf library.
"""

from __future__ import annotations

_SMALL = [bytes([i]) for i in range(128)]
_TWO_BYTES = tuple(bytes([(i & 0x7F) | 0x80, i >> 7]) for i in range(128, 1 << 14))  # lengths of lines and entries


def varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    if n < 1 << 14:
        return _TWO_BYTES[n - 128]
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_bytes(tag: int, value: bytes) -> bytes:
    """A length-delimited field (wire type 2): key, length, value."""
    return _SMALL[(tag << 3) | 2] + varint(len(value)) + value


def metadata_name(name: str) -> bytes:
    """The constant start of a LabelPairAdapter with this name (field 1), before its value."""
    return field_bytes(1, name.encode())


def metadata(pairs: list[tuple[bytes, str]]) -> bytes:
    """`structuredMetadata` fields (3) of an entry from (metadata_name(name), value) pairs."""
    out = []
    for name, value in pairs:
        pair = name + field_bytes(2, value.encode())
        out.append(b"\x1a" + varint(len(pair)) + pair)
    return b"".join(out)


def entry_head(ts_ns: int, line_len: int, metadata_len: int) -> tuple[bytes, int]:
    """The bytes of an `entries` field (StreamAdapter field 2) before its line, and the whole field's size.

    The field is `head + line + metadata`: key and length of the EntryAdapter, its timestamp, and the
    key and length of the line.
    """
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    ts = (b"\x08" + varint(seconds) if seconds > 0 else b"") + (b"\x10" + varint(nanos) if nanos else b"")
    inner_head = b"\x0a" + varint(len(ts)) + ts + b"\x12" + varint(line_len)
    inner = len(inner_head) + line_len + metadata_len
    head = b"\x12" + varint(inner) + inner_head
    return head, len(head) + line_len + metadata_len


def stream_head(labels_field: bytes, entries_len: int) -> bytes:
    """A `streams` field (PushRequest field 1) up to its entries: key, length, and the labels field."""
    return b"\x0a" + varint(len(labels_field) + entries_len) + labels_field


def labels_field(labels: str) -> bytes:
    """StreamAdapter field 1."""
    return field_bytes(1, labels.encode())

"""The spool's on-disk format, version 1: segment headers, records, the ack cursor, and how a segment is read back.

One directory per spool. Integers are unsigned big-endian; CRC means CRC-32 (ISO-HDLC, `zlib.crc32`).
Files: `<n>.spool` segments, `<n>` the segment number in 20 zero-padded decimal digits (lexical order = write
order; numbers only grow); `acks` the ack cursor (absent or invalid = nothing acked: all replays); `acks.tmp`
(transient, deleted on open); `lock` (empty, held with flock(LOCK_EX) while open: a second opener gets a
StateError); `<n>.spool.corrupt` (a segment with an unreadable header, set aside for inspection, never read).

Segment = 21-byte header, then records back to back up to the end of the file:
    off size field
      0    8 magic     b"KASPOOL1"
      8    1 version   1
      9    8 segment   segment number, equal to the one in the file name
     17    4 crc       CRC of bytes 0..16
Record = 29-byte header, meta, data:
    off size field
      0    4 sync      b"\\xd5KRC" (record marker: lets recovery find the next record after corruption)
      4    4 crc       CRC of bytes 8 .. end of the record (the header fields below, meta and data)
      8    1 flags     bit 0 set: data is one zstd frame; clear: data is the payload as is. Other bits: 0
      9    8 seq       record sequence number (RecordId.seq), increasing through the spool's life
     17    4 meta_len  length of meta
     21    4 data_len  length of data
     25    4 raw_len   length of the payload (== data_len when stored as is)
     29 meta_len meta  caller's bytes, stored as given
      . data_len data  zstd frame (declared content size == raw_len, xxhash64 content checksum), or the payload
A record is valid iff: sync matches, no unknown flag, seq above the previous valid record's seq in the segment,
the record ends within the file, and the CRC matches. The payload is stored as is when zstd does not shrink it.
Before decompressing, the frame's declared content size must equal raw_len, which bounds memory.

Ack cursor `acks`, rewritten atomically (write acks.tmp, fsync, rename over acks, fsync the directory):
      0    8 magic     b"KASACKS1"
      8    4 crc       CRC of bytes 12 .. end
     12    8 next_seq      no record has a seq >= this (floor for the next seq after a restart)
     20    8 next_segment  no segment has a number >= this
     28    4 count     number of ranges
     32 16*count       ranges (first_seq u64, last_seq u64), inclusive, ascending, disjoint: records with a
                       seq in a range are acked. Ranges only cover records of segments that still exist.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field

import zstandard

SEGMENT_MAGIC = b"KASPOOL1"
FORMAT_VERSION = 1
RECORD_SYNC = b"\xd5KRC"
CURSOR_MAGIC = b"KASACKS1"
FLAG_ZSTD = 0x01
U32_MAX = 0xFFFF_FFFF
_SEG_HDR = struct.Struct(">8sBQI")
_REC_FIELDS = struct.Struct(">BQIII")  # flags, seq, meta_len, data_len, raw_len
_REC_HDR = struct.Struct(">4sI" + _REC_FIELDS.format[1:])
_CURSOR_HDR = struct.Struct(">8sIQQI")
_RANGE = struct.Struct(">QQ")
SEGMENT_HEADER_SIZE = _SEG_HDR.size  # 21
RECORD_OVERHEAD = _REC_HDR.size  # 29
SEGMENT_NAME = re.compile(r"(\d{20})\.spool")

Cursor = tuple[int, int, list[tuple[int, int]]]  # next_seq, next_segment, acked seq ranges


class CorruptRecordError(Exception):
    """A record read back does not pass its checks."""


def segment_header(number: int) -> bytes:
    head = SEGMENT_MAGIC + bytes([FORMAT_VERSION]) + number.to_bytes(8, "big")
    return head + zlib.crc32(head).to_bytes(4, "big")


def check_record(buf: memoryview, pos: int, prev_seq: int) -> tuple[int, int] | None:
    """(seq, end) when a valid record starts at `pos` of `buf`, else None."""
    if len(buf) - pos < RECORD_OVERHEAD:
        return None
    sync, crc, flags, seq, meta_len, data_len, raw_len = _REC_HDR.unpack_from(buf, pos)
    end = pos + RECORD_OVERHEAD + meta_len + data_len
    if sync != RECORD_SYNC or flags & ~FLAG_ZSTD or seq <= prev_seq or end > len(buf):
        return None
    if not flags & FLAG_ZSTD and data_len != raw_len:
        return None
    return (seq, end) if zlib.crc32(buf[pos + 8 : end]) == crc else None


def decode_record(buf: bytes, seq: int) -> tuple[bytes, bytes]:
    """(meta, payload) of the record `buf` (exactly one record), checked again; raises CorruptRecordError."""
    mv = memoryview(buf)
    if check_record(mv, 0, seq - 1) != (seq, len(buf)):
        raise CorruptRecordError("bad record frame or CRC")
    _, _, flags, _, meta_len, _, raw_len = _REC_HDR.unpack_from(buf)
    meta, data = bytes(mv[RECORD_OVERHEAD : RECORD_OVERHEAD + meta_len]), mv[RECORD_OVERHEAD + meta_len :]
    if not flags & FLAG_ZSTD:
        return meta, bytes(data)
    try:
        if zstandard.frame_content_size(data) != raw_len:
            raise CorruptRecordError("zstd frame size does not match raw_len")
        payload = zstandard.ZstdDecompressor().decompress(data, max_output_size=raw_len)
    except zstandard.ZstdError as exc:
        raise CorruptRecordError(f"zstd: {exc}") from exc
    if len(payload) != raw_len:
        raise CorruptRecordError("decompressed size does not match raw_len")
    return meta, payload


def frame_record(seq: int, flags: int, meta: bytes, data: bytes, raw_len: int) -> list[bytes]:
    """A record's bytes, as parts to write back to back."""
    fields = _REC_FIELDS.pack(flags, seq, len(meta), len(data), raw_len)
    crc = zlib.crc32(data, zlib.crc32(meta, zlib.crc32(fields)))
    return [RECORD_SYNC + crc.to_bytes(4, "big") + fields, meta, data]


@dataclass(slots=True)
class SegmentScan:
    """What reading a segment file back found."""

    records: list[tuple[int, int, int]] = field(default_factory=list)  # (seq, offset, length) of each valid record
    skipped: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) of corrupt regions a valid record follows
    torn_at: int | None = None  # where invalid bytes with no valid record after them begin (the file is cut there)


def scan_segment(data: bytes) -> SegmentScan:
    """Every valid record after the header of a segment's bytes, in order (the header is checked by the caller)."""
    scan, mv, pos, prev = SegmentScan(), memoryview(data), SEGMENT_HEADER_SIZE, -1
    while pos < len(data):
        hit = check_record(mv, pos, prev)
        if hit is not None:
            scan.records.append((hit[0], pos, hit[1] - pos))
            prev, pos = hit
            continue
        nxt = data.find(RECORD_SYNC, pos + 1)
        while nxt != -1 and check_record(mv, nxt, prev) is None:
            nxt = data.find(RECORD_SYNC, nxt + 1)
        if nxt == -1:
            scan.torn_at = pos
            break
        scan.skipped.append((pos, nxt - pos))
        pos = nxt
    return scan


def encode_cursor(next_seq: int, next_segment: int, ranges: list[tuple[int, int]]) -> bytes:
    body = struct.pack(">QQI", next_seq, next_segment, len(ranges))
    body += b"".join(_RANGE.pack(first, last) for first, last in ranges)
    return CURSOR_MAGIC + zlib.crc32(body).to_bytes(4, "big") + body


def decode_cursor(raw: bytes) -> Cursor | None:
    """The cursor in `raw`, or None when it is not a valid one."""
    if len(raw) >= _CURSOR_HDR.size:
        magic, crc, next_seq, next_segment, count = _CURSOR_HDR.unpack_from(raw)
        if magic == CURSOR_MAGIC and len(raw) == _CURSOR_HDR.size + count * _RANGE.size and zlib.crc32(memoryview(raw)[8 + 4 :]) == crc:
            return next_seq, next_segment, list(_RANGE.iter_unpack(raw[_CURSOR_HDR.size :]))
    return None

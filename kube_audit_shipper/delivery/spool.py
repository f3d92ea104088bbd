"""Per-sink disk spool: a crash-safe, ordered, bounded on-disk queue of batches.

A record is one batch: an opaque payload (the NDJSON events, stored zstd-compressed) plus small caller-defined
`meta` bytes. `append`/`append_many` return only once the records are fsynced (durable); only then may the
caller count the batch as acknowledged for checkpointing. Readers take the oldest unacknowledged records with
`next_unacked` and `ack` them once delivered, in any order. Everything not acked replays in the original order
after a restart: a record is never lost, and may be delivered again when its ack was not yet durable.

Threads: one writer thread calls `append*` (blocking: compression, write, fsync); `next_unacked`, `ack`,
`has_room`, `bytes_used` may be called concurrently from the event loop. `ack` touches memory only: it returns
True when a flush is due (every `ack_flush_every` acks, or a segment became fully acked) and the caller should
run `flush_acks` (blocking) in a thread; `append*` also flushes when due, and `close` always does.
`next_unacked` reads files (blocking for large batches). `Spool(...)` itself blocks while it recovers.

On-disk format, version 1
-------------------------
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

Durability and recovery: a segment header is fsynced, and the directory too, before any record goes in; a
group of records is written then fsynced once. A segment is deleted (then the directory fsynced) once all its
records are acked and it is not the segment being written; the cursor is written after such deletions. On
open, segments are read in order and every record validated. An invalid record followed by a valid one
(found by scanning forward for the sync marker) is skipped: warning with segment and offset,
stats["corrupt_records"] += 1 per skipped region. Invalid bytes with no valid record after them are a torn
tail: the file is truncated at the last good record and fsynced (stats["torn_tails_cut"]). The newest segment,
if at most 21 bytes long with an invalid header, was torn while being created: deleted (also counted in
torn_tails_cut). Any other invalid header: the file is renamed to .corrupt (stats["quarantined_segments"]).
Segments found on open are not written again; the first append starts a new segment. Bounds: an append never
takes the sum of segment sizes above max_bytes (fully acked segments are deleted before their room is used);
segments roll at segment_bytes, and a record bigger than that gets a segment of its own.
"""

from __future__ import annotations

import bisect
import fcntl
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import zstandard

from kube_audit_shipper.delivery.config import SPOOL_SEGMENT_BYTES
from kube_audit_shipper.errors import AgentError, StateError

_log = logging.getLogger(__name__)

SEGMENT_MAGIC = b"KASPOOL1"
FORMAT_VERSION = 1
RECORD_SYNC = b"\xd5KRC"
CURSOR_MAGIC = b"KASACKS1"
FLAG_ZSTD = 0x01
_U32_MAX = 0xFFFF_FFFF
_SEG_HDR = struct.Struct(">8sBQI")
_REC_FIELDS = struct.Struct(">BQIII")  # flags, seq, meta_len, data_len, raw_len
_REC_HDR = struct.Struct(">4sI" + _REC_FIELDS.format[1:])
_CURSOR_HDR = struct.Struct(">8sIQQI")
_RANGE = struct.Struct(">QQ")
SEGMENT_HEADER_SIZE = _SEG_HDR.size  # 21
RECORD_OVERHEAD = _REC_HDR.size  # 29
_SEGMENT_NAME = re.compile(r"(\d{20})\.spool")


class SpoolFullError(AgentError):
    """The records do not fit now: hold the reader back and retry once acks have freed room."""


class RecordTooLargeError(AgentError, ValueError):
    """The record can never fit (over max_bytes, or a field over 4 GiB): retrying will not help."""


class RecordId(NamedTuple):
    segment: int
    seq: int


class SpooledRecord(NamedTuple):
    id: RecordId
    meta: bytes
    payload: bytes


class _Corrupt(Exception):
    pass


class _Segment:
    """In-memory index of one segment file: its records (sorted by seq) and which are acked."""

    __slots__ = ("acked", "first_unacked", "n_acked", "number", "path", "seqs", "size", "spans")

    def __init__(self, number: int, path: Path, size: int) -> None:
        self.number, self.path, self.size = number, path, size
        self.seqs: list[int] = []
        self.spans: list[tuple[int, int]] = []  # (offset, length) of each record
        self.acked = bytearray()
        self.n_acked = 0
        self.first_unacked = 0  # every record before this index is acked

    def add(self, seq: int, offset: int, length: int) -> None:
        self.seqs.append(seq)
        self.spans.append((offset, length))
        self.acked.append(0)

    def mark(self, i: int) -> bool:
        if self.acked[i]:
            return False
        self.acked[i] = 1
        self.n_acked += 1
        while self.first_unacked < len(self.seqs) and self.acked[self.first_unacked]:
            self.first_unacked += 1
        return True

    @property
    def done(self) -> bool:
        return self.n_acked == len(self.seqs)


def _check(buf: memoryview, pos: int, prev_seq: int) -> tuple[int, int] | None:
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


def _decode(buf: bytes, seq: int) -> tuple[bytes, bytes]:
    """(meta, payload) of the record `buf` (exactly one record), checked again; raises _Corrupt."""
    mv = memoryview(buf)
    if _check(mv, 0, seq - 1) != (seq, len(buf)):
        raise _Corrupt("bad record frame or CRC")
    _, _, flags, _, meta_len, _, raw_len = _REC_HDR.unpack_from(buf)
    meta, data = bytes(mv[RECORD_OVERHEAD : RECORD_OVERHEAD + meta_len]), mv[RECORD_OVERHEAD + meta_len :]
    if not flags & FLAG_ZSTD:
        return meta, bytes(data)
    try:
        if zstandard.frame_content_size(data) != raw_len:
            raise _Corrupt("zstd frame size does not match raw_len")
        payload = zstandard.ZstdDecompressor().decompress(data, max_output_size=raw_len)
    except zstandard.ZstdError as exc:
        raise _Corrupt(f"zstd: {exc}") from exc
    if len(payload) != raw_len:
        raise _Corrupt("decompressed size does not match raw_len")
    return meta, payload


def _frame(seq: int, flags: int, meta: bytes, data: bytes, raw_len: int) -> list[bytes]:
    fields = _REC_FIELDS.pack(flags, seq, len(meta), len(data), raw_len)
    crc = zlib.crc32(data, zlib.crc32(meta, zlib.crc32(fields)))
    return [RECORD_SYNC + crc.to_bytes(4, "big") + fields, meta, data]


def _write_all(fd: int, parts: list[bytes], offset: int) -> None:
    """Write `parts` at `offset` (explicit offsets: a cut-back after a failed write leaves no hole)."""
    views = [memoryview(p) for p in parts if p]
    while views:
        n = os.pwritev(fd, views, offset)
        offset += n
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if views:
            views[0] = views[0][n:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Crash-safe, ordered, bounded on-disk queue of batches for one sink (see the module docstring)."""

    def __init__(
        self,
        directory: Path | str,
        *,
        max_bytes: int,
        segment_bytes: int = SPOOL_SEGMENT_BYTES,
        compression_level: int = 3,
        ack_flush_every: int = 256,
    ) -> None:
        if max_bytes < SEGMENT_HEADER_SIZE + RECORD_OVERHEAD + 1 or segment_bytes < 1 or ack_flush_every < 1:
            raise ValueError(f"spool limits too small: max_bytes={max_bytes} segment_bytes={segment_bytes}")
        zstandard.ZstdCompressor(level=compression_level)  # rejects an invalid level now
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max_bytes)
        self._level = compression_level
        self._ack_flush_every = ack_flush_every
        self.stats = dict.fromkeys(("corrupt_records", "torn_tails_cut", "replayed_records", "quarantined_segments", "full_rejections"), 0)
        self._lock = threading.Lock()  # in-memory state; never held during file I/O
        self._io_lock = threading.Lock()  # serialises file mutations: appends, deletions, cursor writes
        self._segments: dict[int, _Segment] = {}  # by number, ascending
        self._active: _Segment | None = None  # the segment being written
        self._active_fd = -1
        self._write_pos = 0
        self._next_seq = self._next_segment = self._acks_since_flush = 0
        self._closed = False
        self._failed: OSError | None = None
        self._lock_fd = self._take_lock()
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ---- recovery ----------------------------------------------------------------------------------

    def _take_lock(self) -> int:
        try:
            self.directory.mkdir(parents=True)
            _fsync_dir(self.directory.parent)
        except FileExistsError:
            pass
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(f"spool {self.directory} is already open (in this or another process)") from None
        return fd

    def _recover(self) -> None:
        (self.directory / "acks.tmp").unlink(missing_ok=True)
        cursor = self._load_cursor()
        numbered = sorted((int(m.group(1)), p) for p in self.directory.iterdir() if (m := _SEGMENT_NAME.fullmatch(p.name)))
        for i, (number, path) in enumerate(numbered):
            seg = self._scan(number, path, newest=i == len(numbered) - 1)
            if seg is not None:
                self._segments[number] = seg
        next_seq, next_segment, ranges = cursor if cursor else (0, 0, [])
        starts = [r[0] for r in ranges]
        for seg in self._segments.values():
            for i, seq in enumerate(seg.seqs):
                k = bisect.bisect_right(starts, seq) - 1
                if k >= 0 and seq <= ranges[k][1]:
                    seg.mark(i)
            if seg.seqs:
                next_seq = max(next_seq, seg.seqs[-1] + 1)
        self._next_seq = next_seq
        self._next_segment = max([next_segment] + [n + 1 for n, _ in numbered])
        dead = [s for s in self._segments.values() if s.done]
        for seg in dead:
            del self._segments[seg.number]
            seg.path.unlink()
        if len(self._segments) < len(numbered):  # deleted or renamed some
            _fsync_dir(self.directory)
        self.stats["replayed_records"] = self.unacked_count

    def _scan(self, number: int, path: Path, *, newest: bool) -> _Segment | None:
        data = path.read_bytes()
        if data[:SEGMENT_HEADER_SIZE] != self._segment_header(number):
            if newest and len(data) <= SEGMENT_HEADER_SIZE:
                _log.warning("spool %s: removing segment torn while being created", path)
                path.unlink()
                self.stats["torn_tails_cut"] += 1
            else:
                _log.warning("spool %s: invalid segment header; renamed to .corrupt, records not replayed", path)
                os.replace(path, path.with_name(path.name + ".corrupt"))
                self.stats["quarantined_segments"] += 1
            return None
        seg, mv, pos, prev = _Segment(number, path, len(data)), memoryview(data), SEGMENT_HEADER_SIZE, -1
        while pos < len(data):
            hit = _check(mv, pos, prev)
            if hit is not None:
                seg.add(hit[0], pos, hit[1] - pos)
                prev, pos = hit
                continue
            nxt = data.find(RECORD_SYNC, pos + 1)
            while nxt != -1 and _check(mv, nxt, prev) is None:
                nxt = data.find(RECORD_SYNC, nxt + 1)
            if nxt == -1:
                _log.warning("spool %s: cutting torn tail at offset %d (%d bytes)", path, pos, len(data) - pos)
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, pos)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                seg.size = pos
                self.stats["torn_tails_cut"] += 1
                break
            _log.warning("spool %s: corrupt record at offset %d, skipped %d bytes", path, pos, nxt - pos)
            self.stats["corrupt_records"] += 1
            pos = nxt
        return seg

    def _load_cursor(self) -> tuple[int, int, list[tuple[int, int]]] | None:
        try:
            raw = (self.directory / "acks").read_bytes()
        except FileNotFoundError:
            return None
        if len(raw) >= _CURSOR_HDR.size:
            magic, crc, next_seq, next_segment, count = _CURSOR_HDR.unpack_from(raw)
            if magic == CURSOR_MAGIC and len(raw) == _CURSOR_HDR.size + count * _RANGE.size and zlib.crc32(memoryview(raw)[8 + 4 :]) == crc:
                return next_seq, next_segment, list(_RANGE.iter_unpack(raw[_CURSOR_HDR.size :]))
        _log.warning("spool %s: invalid ack cursor ignored; all records will be replayed", self.directory)
        return None

    # ---- writing -----------------------------------------------------------------------------------

    def append(self, payload: bytes, meta: bytes = b"") -> RecordId:
        """Spool one record; returns once it is durable. Raises SpoolFullError / RecordTooLargeError."""
        return self.append_many([(payload, meta)])[0]

    def append_many(self, records: Iterable[tuple[bytes, bytes]]) -> list[RecordId]:
        """Spool (payload, meta) records in order with one fsync (group commit); all or none fit.

        Returns once all are durable. If writing fails, records committed at a segment roll are kept (they
        will be delivered: at-least-once) and the rest cut off; the spool stays usable if the cut-back
        (truncate + fsync) succeeds, else appends raise StateError until reopened."""
        cctx = zstandard.ZstdCompressor(level=self._level, write_checksum=True)
        encoded = []
        for payload, meta in records:
            data, flags = cctx.compress(payload), FLAG_ZSTD
            if len(data) >= len(payload):
                data, flags = payload, 0
            size = RECORD_OVERHEAD + len(meta) + len(data)
            if max(len(payload), len(meta)) > _U32_MAX or size + SEGMENT_HEADER_SIZE > self.max_bytes:
                raise RecordTooLargeError(f"spool record of {size} bytes (payload {len(payload)}) can never fit max_bytes={self.max_bytes}")
            encoded.append((flags, bytes(meta), data, len(payload), size))
        if not encoded:
            return []
        with self._io_lock:
            self._check_usable()
            with self._lock:
                due = self._acks_since_flush >= self._ack_flush_every
            self._reclaim(persist=due)
            with self._lock:
                rolls = self._plan([e[4] for e in encoded])
                if rolls is None:
                    self.stats["full_rejections"] += 1
                    raise SpoolFullError(
                        f"spool {self.directory} full: {self._live_bytes()} of {self.max_bytes} bytes used, {sum(e[4] for e in encoded)} more needed"
                    )
            try:
                return self._write(encoded, rolls)
            except BaseException:
                self._abort_write()
                raise

    def _plan(self, sizes: list[int]) -> list[bool] | None:
        """Under _lock: for each record, whether a new segment starts before it; None if they do not fit."""
        act = self._active
        reclaimable = act is not None and act.seqs and act.done  # the active segment, were it rolled away
        for force in (False, True) if reclaimable else (False,):
            used, rolls = self._live_bytes(), list[bool]()
            cur = None if act is None else act.size
            fresh, reclaim = act is None or not act.seqs, act.size if reclaimable and act is not None else 0
            for size in sizes:
                roll = cur is None or (force and not rolls) or (not fresh and cur + size > self.segment_bytes)
                if roll or cur is None:
                    used, cur = used + SEGMENT_HEADER_SIZE - reclaim, SEGMENT_HEADER_SIZE
                used, cur, fresh, reclaim = used + size, cur + size, False, 0
                rolls.append(roll)
            if used <= self.max_bytes:
                return rolls
        return None

    def _write(self, encoded: list[tuple[int, bytes, bytes, int, int]], rolls: list[bool]) -> list[RecordId]:
        ids: list[RecordId] = []
        pending: list[tuple[int, int, int]] = []
        for (flags, meta, data, raw_len, size), roll in zip(encoded, rolls, strict=True):
            if roll:
                self._commit(pending)
                pending = []
                self._new_segment()
            with self._lock:
                seq, self._next_seq = self._next_seq, self._next_seq + 1
            _write_all(self._active_fd, _frame(seq, flags, meta, data, raw_len), self._write_pos)
            pending.append((seq, self._write_pos, size))
            self._write_pos += size
            ids.append(RecordId(self._active.number, seq))  # type: ignore[union-attr]
        self._commit(pending)
        return ids

    def _commit(self, pending: list[tuple[int, int, int]]) -> None:
        """fsync the active segment, then make `pending` records visible to readers."""
        if not pending:
            return
        os.fsync(self._active_fd)
        with self._lock:
            seg = self._active
            assert seg is not None
            for seq, offset, size in pending:
                seg.add(seq, offset, size)
            seg.size = self._write_pos

    def _new_segment(self) -> None:
        old = self._active
        if old is not None:
            os.close(self._active_fd)
            self._active_fd = -1
            with self._lock:
                self._active, dead = None, old.done
                if dead:
                    del self._segments[old.number]
            if dead:  # the directory fsync below covers the unlink
                old.path.unlink()
        with self._lock:
            number, self._next_segment = self._next_segment, self._next_segment + 1
        path = self.directory / f"{number:020d}.spool"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, [self._segment_header(number)], 0)
            os.fsync(fd)
            _fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        with self._lock:
            self._active = self._segments[number] = _Segment(number, path, SEGMENT_HEADER_SIZE)
        self._active_fd, self._write_pos = fd, SEGMENT_HEADER_SIZE

    def _abort_write(self) -> None:
        if self._active is None or self._active_fd < 0:
            return
        try:
            os.ftruncate(self._active_fd, self._active.size)
            os.fsync(self._active_fd)
            self._write_pos = self._active.size
        except OSError as exc:
            _log.error("spool %s: cannot cut back a failed write, appends disabled: %s", self.directory, exc)
            self._failed = exc

    @staticmethod
    def _segment_header(number: int) -> bytes:
        head = SEGMENT_MAGIC + bytes([FORMAT_VERSION]) + number.to_bytes(8, "big")
        return head + zlib.crc32(head).to_bytes(4, "big")

    # ---- reading and acknowledging -----------------------------------------------------------------

    def next_unacked(self, limit: int = 1, *, after: RecordId | None = None) -> list[SpooledRecord]:
        """Up to `limit` oldest unacked records (after `after` if given, for paging), in spool order.

        A record found corrupt at read time (damaged after open) is logged, counted and dropped."""
        with self._lock:
            self._check_open()
            picks: list[tuple[_Segment, int, int, int]] = []
            for seg in self._segments.values():
                if len(picks) >= limit:
                    break
                if after is not None and seg.number < after.segment:
                    continue
                i = seg.first_unacked
                if after is not None and seg.number == after.segment:
                    i = max(i, bisect.bisect_right(seg.seqs, after.seq))
                for j in range(i, len(seg.seqs)):
                    if len(picks) >= limit:
                        break
                    if not seg.acked[j]:
                        picks.append((seg, j, *seg.spans[j]))
        out: list[SpooledRecord] = []
        for seg, j, offset, length in picks:
            try:
                with open(seg.path, "rb", buffering=0) as f:
                    buf = os.pread(f.fileno(), length, offset)
            except FileNotFoundError:  # reclaimed meanwhile: all its records were acked
                continue
            try:
                meta, payload = _decode(buf, seg.seqs[j])
            except _Corrupt as exc:
                _log.error("spool %s: record at offset %d unreadable, dropped: %s", seg.path, offset, exc)
                with self._lock:
                    self.stats["corrupt_records"] += 1
                    seg.mark(j)
                continue
            out.append(SpooledRecord(RecordId(seg.number, seg.seqs[j]), meta, payload))
        return out

    def ack(self, record_id: RecordId) -> bool:
        """Mark a record delivered (memory only; any order; repeats are no-ops).

        Returns True when `flush_acks` is due: persist acks and delete fully acked segments."""
        with self._lock:
            self._check_open()
            seg = self._segments.get(record_id.segment)
            if seg is None:
                if record_id.segment < self._next_segment:
                    return False  # its segment was fully acked and deleted
                raise ValueError(f"unknown spool record {record_id}")
            i = bisect.bisect_left(seg.seqs, record_id.seq)
            if i == len(seg.seqs) or seg.seqs[i] != record_id.seq:
                raise ValueError(f"unknown spool record {record_id}")
            if seg.mark(i):
                self._acks_since_flush += 1
            return self._acks_since_flush >= self._ack_flush_every or (seg.done and seg is not self._active)

    def flush_acks(self) -> None:
        """Blocking: delete fully acked segments, then persist the ack cursor if anything changed."""
        with self._io_lock:
            self._check_open()
            self._reclaim(persist=True)

    def _reclaim(self, *, persist: bool) -> None:
        """Under _io_lock: delete fully acked closed segments; with `persist`, then rewrite the cursor."""
        with self._lock:
            dead = [s for s in self._segments.values() if s.done and s is not self._active]
            for seg in dead:
                del self._segments[seg.number]
            flushed = self._acks_since_flush if persist else 0
            snapshot = None
            if flushed or (persist and dead):
                self._acks_since_flush = 0
                snapshot = (self._next_seq, self._next_segment, self._acked_ranges())
        for seg in dead:
            seg.path.unlink(missing_ok=True)
        if dead:
            _fsync_dir(self.directory)
        if snapshot is not None:
            try:
                self._write_cursor(*snapshot)
            except BaseException:
                with self._lock:
                    self._acks_since_flush += flushed
                raise

    def _acked_ranges(self) -> list[tuple[int, int]]:
        """Under _lock: maximal runs of consecutive acked records, as inclusive seq ranges."""
        ranges: list[tuple[int, int]] = []
        extend = False
        for seg in self._segments.values():
            for seq, acked in zip(seg.seqs, seg.acked, strict=True):
                if acked and extend:
                    ranges[-1] = (ranges[-1][0], seq)
                elif acked:
                    ranges.append((seq, seq))
                extend = bool(acked)
        return ranges

    def _write_cursor(self, next_seq: int, next_segment: int, ranges: list[tuple[int, int]]) -> None:
        body = struct.pack(">QQI", next_seq, next_segment, len(ranges))
        body += b"".join(_RANGE.pack(first, last) for first, last in ranges)
        tmp = self.directory / "acks.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, [CURSOR_MAGIC, zlib.crc32(body).to_bytes(4, "big"), body], 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / "acks")
        _fsync_dir(self.directory)

    # ---- state -------------------------------------------------------------------------------------

    def _live_bytes(self) -> int:
        return sum(s.size for s in self._segments.values() if s is self._active or not s.done)

    @property
    def bytes_used(self) -> int:
        """On-disk bytes of live segments (fully acked ones are reclaimed before their room is needed)."""
        with self._lock:
            return self._live_bytes()

    @property
    def unacked_count(self) -> int:
        with self._lock:
            return sum(len(s.seqs) - s.n_acked for s in self._segments.values())

    def has_room(self, nbytes: int) -> bool:
        """Whether a record whose payload + meta total `nbytes` (uncompressed) would be accepted now."""
        with self._lock:
            return not self._closed and self._plan([RECORD_OVERHEAD + nbytes]) is not None

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"spool {self.directory} is closed")

    def _check_usable(self) -> None:
        self._check_open()
        if self._failed is not None:
            raise StateError(f"spool {self.directory} unusable after I/O error: {self._failed}")

    def close(self) -> None:
        """Seal the active segment, delete fully acked segments, persist acks, release the lock. Idempotent."""
        with self._io_lock:
            if self._closed:
                return
            try:
                if self._active_fd >= 0:
                    os.close(self._active_fd)
                    self._active_fd = -1
                with self._lock:
                    self._active = None
                self._reclaim(persist=True)  # acks stay worth persisting even after a failed append
            finally:
                with self._lock:
                    self._closed = True
                os.close(self._lock_fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

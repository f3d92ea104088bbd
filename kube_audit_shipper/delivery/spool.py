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

On-disk format: delivery/spool_format.py; recovery: delivery/spool_segments.py.

Durability and recovery: a segment header is fsynced, and the directory too, before any record goes in; a
group of records is written then fsynced once. A segment is deleted (then the directory fsynced) once all its
records are acked and it is not the segment being written; the cursor is written after such deletions. On
open, every segment is read back and validated, torn tails cut (delivery/spool_segments.py).
Segments found on open are not written again; the first append starts a new segment. Bounds: an append never
takes the sum of segment sizes above max_bytes (fully acked segments are deleted before their room is used);
segments roll at segment_bytes, and a record bigger than that gets a segment of its own.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import zstandard

from kube_audit_shipper.delivery.config import SPOOL_SEGMENT_BYTES
from kube_audit_shipper.delivery.spool_format import (
    FLAG_ZSTD,
    RECORD_OVERHEAD,
    SEGMENT_HEADER_SIZE,
    U32_MAX,
    CorruptRecordError,
    decode_record,
    encode_cursor,
    frame_record,
    segment_header,
)
from kube_audit_shipper.delivery.spool_segments import Segment, acked_ranges, recover
from kube_audit_shipper.durable import ensure_dir, fsync_dir, lock_exclusive, pwrite_all, write_atomic
from kube_audit_shipper.errors import AgentError, StateError

__all__ = ["RECORD_OVERHEAD", "SEGMENT_HEADER_SIZE", "RecordId", "RecordTooLargeError", "Spool", "SpoolFullError", "SpooledRecord"]

_log = logging.getLogger(__name__)


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
        self._segments: dict[int, Segment] = {}  # by number, ascending
        self._active: Segment | None = None  # the segment being written
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
        ensure_dir(self.directory, 0o700)
        try:
            return lock_exclusive(self.directory / "lock")
        except BlockingIOError:
            raise StateError(f"spool {self.directory} is already open (in this or another process)") from None

    def _recover(self) -> None:
        self._segments, self._next_seq, self._next_segment = recover(self.directory, self.stats)
        self.stats["replayed_records"] = self.unacked_count

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
            if max(len(payload), len(meta)) > U32_MAX or size + SEGMENT_HEADER_SIZE > self.max_bytes:
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
            pwrite_all(self._active_fd, frame_record(seq, flags, meta, data, raw_len), self._write_pos)
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
            pwrite_all(fd, [segment_header(number)], 0)
            os.fsync(fd)
            fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        with self._lock:
            self._active = self._segments[number] = Segment(number, path, SEGMENT_HEADER_SIZE)
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

    # ---- reading and acknowledging -----------------------------------------------------------------

    def next_unacked(self, limit: int = 1, *, after: RecordId | None = None) -> list[SpooledRecord]:
        """Up to `limit` oldest unacked records (after `after` if given, for paging), in spool order.

        A record found corrupt at read time (damaged after open) is logged, counted and dropped."""
        with self._lock:
            self._check_open()
            picks: list[tuple[Segment, int, int, int]] = []
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
                meta, payload = decode_record(buf, seg.seqs[j])
            except CorruptRecordError as exc:
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
                snapshot = (self._next_seq, self._next_segment, acked_ranges(self._segments.values()))
        for seg in dead:
            seg.path.unlink(missing_ok=True)
        if dead:
            fsync_dir(self.directory)
        if snapshot is not None:
            try:
                self._write_cursor(*snapshot)
            except BaseException:
                with self._lock:
                    self._acks_since_flush += flushed
                raise

    def _write_cursor(self, next_seq: int, next_segment: int, ranges: list[tuple[int, int]]) -> None:
        write_atomic(self.directory / "acks", encode_cursor(next_seq, next_segment, ranges))

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

"""Per-file state and read scheduling: discovery, rotation, truncation, deletion, resume.

Each file on disk that the config selects is tracked by identity (source/identity.py), with its own
`fid` (a new one after a truncation, so late acknowledgements of the old content move nothing).
Inside a family (an active path and its kube-apiserver backups) the oldest file with unread data is
read first; a backup or deleted file read to its end is *drained* and closed, and becomes *complete*
once every sink acknowledged it. Reads and line processing run in a worker thread; the loop here only
schedules. The reader waits while the memory budget is used up (backpressure, nothing dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.checkpoint.store import Entry
from kube_audit_shipper.delivery.budget import ByteBudget
from kube_audit_shipper.model import Chunk
from kube_audit_shipper.process.decode import LineProcessor
from kube_audit_shipper.source.config import InputConfig
from kube_audit_shipper.source.discover import Found, Unreadable, discover, watch_dirs
from kube_audit_shipper.source.identity import FP_BYTES, Fingerprint, gzip_complete, is_gzip_fd, match_checkpoint, read_head
from kube_audit_shipper.source.reader import CorruptInputError, LineReader
from kube_audit_shipper.source.watch import ChangeHints

log = logging.getLogger(__name__)

DEADLETTER_RETRY_MAX_S = 30.0  # backoff cap while the state directory refuses dead-letter writes


@dataclass(eq=False)
class TrackedFile:
    fid: int
    entry: Entry
    family: str
    rank: tuple[int, str]
    fd: int | None = None
    reader: LineReader | None = None
    size: int = 0
    on_disk: bool = True
    drained_at: int | None = None  # offset where a rotated/deleted file ended
    waiting: bool = False  # live file at EOF (or gzip still being written)
    inflight: deque[tuple[int, int]] = field(default_factory=deque)  # (chunk end, bytes charged)
    emitted_end: int = 0  # end of everything handed to the sinks or acknowledged without records

    @property
    def done(self) -> bool:
        return self.entry.complete or self.drained_at is not None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self.reader = None


class Tailer:
    def __init__(
        self,
        cfg: InputConfig,
        *,
        entries: list[Entry] | None,
        processor: LineProcessor,
        ledger: Ledger,
        budget: ByteBudget,
        emit: Callable[[Chunk], Awaitable[None]],
        forget_after_s: float,
        metrics: object | None = None,
    ) -> None:
        self.cfg = cfg
        self.first_start = entries is None
        self.entries: list[Entry] = list(entries or [])
        self.processor = processor
        self.ledger = ledger
        self.budget = budget
        self.emit = emit
        self.forget_after_s = forget_after_s
        self.metrics = metrics
        self.files: dict[int, TrackedFile] = {}
        self._next_fid = 1
        self.truncations = 0
        self.read_errors: Counter[str] = Counter()  # inputs that became unreadable, by reason (and corrupt files)
        self.unreadable: dict[str, Unreadable] = {}  # inputs that exist but cannot be read right now
        self.ever_unreadable = False  # some input could not be read during this run (run --once reports it)
        self._read_failing: dict[str, Unreadable] = {}  # open files whose last read failed
        self._deferred: dict[tuple[int, int], Found] = {}  # found, not opened: max_open_files were open
        self._scans = 0
        self.lost_files = 0  # files deleted before they were read to their end
        self.lost_bytes = 0  # their unread bytes (as far as known: gzip sizes are not)
        self.bytes_read = 0
        self.hints: ChangeHints | None = None
        self._last_rescan = 0.0
        self._oldest_backup: dict[str, str] = {}  # family -> path of its oldest backup on disk
        self._warned_at_risk: set[str] = set()
        self._stop = asyncio.Event()  # run() gives the pipeline's

    # -- acknowledgements (called by the ledger, on the loop) ------------------------------------
    def on_advance(self, fid: int, offset: int) -> None:
        tf = self.files.get(fid)
        if tf is None:
            return
        tf.entry.offset = offset
        released = 0
        while tf.inflight and tf.inflight[0][0] <= offset:
            released += tf.inflight.popleft()[1]
        if released:
            self.budget.release(released)
        if tf.drained_at is not None and offset >= tf.drained_at and not tf.entry.complete:
            tf.entry.complete = True

    # -- discovery -------------------------------------------------------------------------------
    def _new_fid(self) -> int:
        fid = self._next_fid
        self._next_fid += 1
        return fid

    def _track(self, found: Found, entry: Entry, fd: int | None, gz: bool) -> TrackedFile:
        tf = TrackedFile(fid=self._new_fid(), entry=entry, family=found.family, rank=found.rank, fd=fd, size=found.stat.size)
        if entry.complete and fd is not None:
            tf.close()
        elif fd is not None:
            try:
                tf.reader = LineReader(fd, offset=entry.offset, gz=gz, chunk_bytes=self.cfg.read_chunk_bytes, max_line_bytes=self.cfg.max_line_bytes)
            except CorruptInputError as exc:
                self._unreadable(tf, str(exc))
        self.files[tf.fid] = tf
        self.ledger.open(tf.fid, entry.offset)
        return tf

    def _unreadable(self, tf: TrackedFile, reason: str) -> None:
        """A file that cannot be read further: record where and why, count it, move on."""
        self.read_errors["corrupt"] += 1
        log.error(
            "cannot read file further; its remaining content is recorded as a dead letter",
            extra={"path": tf.entry.path, "offset": tf.entry.offset, "reason": reason},
        )
        self.processor.deadletter.add(reason=f"unreadable input: {reason}", sink=None, path=tf.entry.path, offset=tf.entry.offset, length=None, event=None)
        self.processor.count("deadletter:unreadable")
        tf.close()
        tf.drained_at = tf.entry.offset
        tf.entry.complete = True

    def _start_offset(self, found: Found, fd: int, gz: bool) -> tuple[int, bool]:
        """Offset (and completeness) for a file with no checkpoint."""
        if not self.first_start:
            return 0, False
        if found.rank[0] == 0 and not self.cfg.backfill_rotated:
            return (0, True) if gz else (_last_line_end(fd, found.stat.size), True)
        if self.cfg.start_at == "end" and not gz:
            return _last_line_end(fd, found.stat.size), False
        return 0, False

    def scan(self) -> None:
        """Match what is on disk to tracked files and checkpoints. On the loop: it changes shared
        state, and its I/O is small (stat, open, reads of 1 KiB); seeking to a checkpoint in a gzip
        file, the one slow step, happens at the first read, in the reader's thread."""
        now = time.time()
        problems: list[Unreadable] = []
        found = discover(self.cfg.paths, self.cfg.exclude, problems)
        self._oldest_backup = {}
        for f in found:  # sorted by (family, rank): the first backup of a family is its oldest
            if f.rank[0] == 0 and f.family not in self._oldest_backup:
                self._oldest_backup[f.family] = f.path
        by_inode = {(f.stat.dev, f.stat.ino): f for f in found}
        # only open files are matched by inode: a closed file's inode may already belong to a new file
        tracked = {(tf.entry.dev, tf.entry.ino): tf for tf in self.files.values() if tf.fd is not None}
        for key, tf in tracked.items():
            seen_now = by_inode.pop(key, None)
            if seen_now is None:
                if tf.on_disk:
                    tf.on_disk = False
                    log.info("file gone from disk; reading the open descriptor to its end", extra={"path": tf.entry.path})
                continue
            tf.on_disk = True
            tf.family, tf.rank, tf.size = seen_now.family, seen_now.rank, seen_now.stat.size
            if not tf.entry.gzip:
                tf.entry.size = seen_now.stat.size
            if tf.entry.path != seen_now.path:
                log.info("file renamed", extra={"from": tf.entry.path, "to": seen_now.path})
                tf.entry.path = seen_now.path
        for fid, tf in list(self.files.items()):
            if tf.fd is None and tf.entry.complete:  # nothing left to read or acknowledge
                del self.files[fid]
                self.ledger.close(fid)
        claimed = {id(tf.entry) for tf in self.files.values()}
        deferred = self._deferred
        self._deferred = {}
        for f in sorted(by_inode.values(), key=lambda f: (f.family, f.rank)):  # oldest first: next to be deleted
            if sum(1 for tf in self.files.values() if tf.fd is not None) >= self.cfg.max_open_files:
                self._deferred[(f.stat.dev, f.stat.ino)] = f
                continue
            self._adopt(f, claimed, problems)
        if self._deferred and not deferred:
            log.warning("max_open_files input files are open; newer files are opened as others are read to their end", extra={"waiting": len(self._deferred)})
        self._set_unreadable({**{p.path: p for p in problems}, **self._read_failing})
        seen = {(f.stat.dev, f.stat.ino) for f in found}
        for key, f in deferred.items():
            if key not in seen:
                self._lost(f.path, f.stat.size, "deleted before it could be opened (max_open_files files were open)")
        reading = {id(tf.entry) for tf in self.files.values() if not tf.done}
        grace_s = 2 * self.cfg.rescan_interval_ms / 1000  # kube-apiserver gzips a backup before it removes it
        for e in list(self.entries):
            if (e.dev, e.ino) in seen:
                e.gone_since = None
                continue
            if e.gone_since is None:
                e.gone_since = now
            if not e.complete and not e.lost and id(e) not in reading and (self._scans == 0 or now - e.gone_since >= grace_s):
                e.lost = True
                self._lost(
                    e.path,
                    max(0, e.size - e.offset),
                    "deleted before it was read to its end" + (" (while the agent was not running)" if self._scans == 0 else ""),
                )
            elif now - e.gone_since > self.forget_after_s and id(e) not in reading:
                self.entries.remove(e)
        self.first_start = False
        self._scans += 1
        self._last_rescan = time.monotonic()
        for path in self.at_risk():
            if path not in self._warned_at_risk:
                self._warned_at_risk.add(path)
                log.warning(
                    "the oldest unread file is the oldest rotated backup on disk: kube-apiserver may delete it at its next "
                    "rotation (--audit-log-maxbackup) before it is shipped; the agent is falling behind",
                    extra={"path": path, "bytes_behind": self.bytes_behind().get(path)},
                )

    def _lost(self, path: str, unread_bytes: int, why: str) -> None:
        """A file went from disk before it was read: its unread events cannot be shipped. Said and counted."""
        self.lost_files += 1
        self.lost_bytes += unread_bytes
        log.error("input file lost: its unread events are not shipped", extra={"path": path, "unread_bytes": unread_bytes, "why": why})

    def _set_unreadable(self, now: dict[str, Unreadable]) -> None:
        """Inputs that cannot be read now: an error when one becomes unreadable (counted by reason), an
        info line when it can be read again."""
        for path, p in now.items():
            if path not in self.unreadable:
                self.read_errors[p.reason] += 1
                self.ever_unreadable = True
                log.error(
                    "cannot read an input; its events are not shipped until it can be read (the agent needs read access: root, or CAP_DAC_READ_SEARCH)",
                    extra={"path": path, "reason": p.reason, "error": p.error},
                )
        for path in set(self.unreadable) - set(now):
            log.info("input readable again", extra={"path": path})
        self.unreadable = now

    def _adopt(self, f: Found, claimed: set[int], problems: list[Unreadable]) -> None:
        try:
            fd = os.open(f.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            problems.append(Unreadable.of(f.path, exc))
            return
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (f.stat.dev, f.stat.ino):  # replaced between stat and open: next scan
            os.close(fd)
            return
        gz = is_gzip_fd(fd)
        if f.path.endswith(".gz") and not gz:
            os.close(fd)  # being created: not even the gzip magic is there yet
            return
        head = read_head(fd, gz)
        if gz and len(head) < FP_BYTES and not gzip_complete(fd):
            os.close(fd)  # kube-apiserver is still compressing it: identify it once its head is there
            return
        entry, stale = match_checkpoint(f.stat, head, self.entries, claimed)
        if stale:
            for e in [e for e in self.entries if (e.dev, e.ino) == (f.stat.dev, f.stat.ino) and e is not entry and id(e) not in claimed]:
                self.entries.remove(e)
        if entry is None:
            for tf in self.files.values():  # same content as a tracked file (the .gz of a backup being drained)?
                if tf.entry.fingerprint.distinctive(head) and tf.entry.fingerprint.matches(head):
                    os.close(fd)
                    return
            offset, complete = self._start_offset(f, fd, gz)
            fp = Fingerprint.of(head)
            entry = Entry(path=f.path, dev=f.stat.dev, ino=f.stat.ino, fp_len=fp.length, fp=fp.digest, gzip=gz, offset=offset, complete=complete)
            self.entries.append(entry)
            log.info("new file", extra={"path": f.path, "offset": offset, "skipped": complete})
        else:
            if (entry.dev, entry.ino) != (f.stat.dev, f.stat.ino):
                log.info("file found again under a new identity (compressed or moved)", extra={"from": entry.path, "to": f.path, "offset": entry.offset})
            entry.path, entry.dev, entry.ino, entry.gzip = f.path, f.stat.dev, f.stat.ino, gz
        claimed.add(id(entry))
        self._track(f, entry, fd, gz)

    # -- polling ---------------------------------------------------------------------------------
    def poll(self) -> None:
        """fstat every open file: growth, truncation, rewritten head. On the loop; cheap."""
        for tf in list(self.files.values()):
            if tf.fd is None or tf.reader is None:
                continue
            try:
                st = os.fstat(tf.fd)
            except OSError:
                continue
            tf.size = st.st_size
            if not tf.entry.gzip:
                tf.entry.size = st.st_size
            if tf.entry.gzip:
                continue
            if st.st_size < tf.reader.read_pos:
                self._truncated(tf, f"size {st.st_size} below read offset {tf.reader.read_pos}")
                continue
            if not self._refresh_fingerprint(tf):
                self._truncated(tf, "first bytes changed")
                continue
            if st.st_size > tf.reader.read_pos:
                tf.waiting = False

    def _refresh_fingerprint(self, tf: TrackedFile) -> bool:
        """Read a plain file's head again: False if it no longer starts with the fingerprinted bytes
        (rewritten), else grow the fingerprint while the file is shorter than 1 KiB."""
        if tf.entry.gzip or tf.fd is None:
            return True
        head = os.pread(tf.fd, FP_BYTES, 0)
        fp = tf.entry.fingerprint
        if not fp.matches(head):
            return False
        if len(head) > fp.length:
            new = Fingerprint.of(head)
            tf.entry.fp_len, tf.entry.fp = new.length, new.digest
        return True

    def _truncated(self, tf: TrackedFile, why: str) -> None:
        self.truncations += 1
        log.warning(
            "file truncated (copytruncate?); reading it again from offset 0; lines written after the last read and before the truncation are lost",
            extra={"path": tf.entry.path, "why": why},
        )
        self.ledger.close(tf.fid)
        self.budget.release(sum(n for _, n in tf.inflight))
        del self.files[tf.fid]
        head = os.pread(tf.fd, FP_BYTES, 0) if tf.fd is not None else b""
        fp = Fingerprint.of(head)
        tf.entry.fp_len, tf.entry.fp, tf.entry.offset, tf.entry.complete = fp.length, fp.digest, 0, False
        assert tf.reader is not None
        tf.reader.reset()
        new = TrackedFile(fid=self._new_fid(), entry=tf.entry, family=tf.family, rank=tf.rank, fd=tf.fd, reader=tf.reader, size=tf.size)
        self.files[new.fid] = new
        self.ledger.open(new.fid, 0)

    # -- reading ---------------------------------------------------------------------------------
    def next_per_family(self) -> list[TrackedFile]:
        """The file to read next in each family: the oldest one not yet drained."""
        best: dict[str, TrackedFile] = {}
        for tf in self.files.values():
            if tf.done or tf.reader is None:
                continue
            cur = best.get(tf.family)
            if cur is None or (tf.rank, tf.fid) < (cur.rank, cur.fid):
                best[tf.family] = tf
        return list(best.values())

    def _read_one(self, tf: TrackedFile) -> tuple[Chunk | None, bool]:
        """Read and process one chunk (worker thread). Returns (chunk, at_eof)."""
        assert tf.reader is not None
        lines = tf.reader.read()
        self.bytes_read += lines.raw_bytes
        if not lines.lines and not lines.oversize:
            return None, lines.eof or lines.gzip_incomplete
        return self.processor.process(tf.fid, tf.entry.path, lines), lines.eof

    async def read_round(self) -> bool:
        """One chunk from the current file of each family. True if anything was read."""
        progressed = False
        for tf in self.next_per_family():
            if tf.waiting:
                continue
            if not await self._memory_room() or not await self._deadletters_written():
                return progressed
            if tf.fid not in self.files or tf.reader is None:  # truncated/closed while waiting
                continue
            try:
                chunk, eof = await asyncio.to_thread(self._read_one, tf)
            except CorruptInputError as exc:
                self._unreadable(tf, str(exc))
                continue
            except OSError as exc:  # nothing was consumed: the same chunk is read again at the next look
                self._read_failing[tf.entry.path] = Unreadable.of(tf.entry.path, exc)
                self._set_unreadable({**self.unreadable, **self._read_failing})
                tf.waiting = True
                continue
            if self._read_failing.pop(tf.entry.path, None) is not None:
                self._set_unreadable({k: v for k, v in self.unreadable.items() if k != tf.entry.path})
            if not tf.entry.fingerprint.full and tf.fd is not None:
                self._refresh_fingerprint(tf)  # a mismatch is the poll's to handle (truncation)
            if chunk is not None:
                progressed = True
                await self._dispatch(tf, chunk)
            if eof and chunk is None:
                self._at_eof(tf)
                if tf.drained_at is not None:  # drained: the family's next file can be read now, not after an idle poll
                    progressed = True
        return progressed

    async def _memory_room(self) -> bool:
        """While the events in memory are at memory_limit_bytes, wait for acknowledgements, and keep
        discovering meanwhile: a backup that appears is opened at once (within max_open_files), so
        kube-apiserver deleting it later (--audit-log-maxbackup) does not lose it. False if a stop came."""
        if self.budget.has_room():
            return True
        self.budget.waits += 1
        while not self.budget.has_room():
            if self._stop.is_set():
                return False
            await self._idle(self._stop, self.cfg.poll_interval_ms / 1000, self.budget.room)
        return True

    async def _deadletters_written(self) -> bool:
        """While the dead-letter store holds records the state directory refused (a full disk), read
        nothing more: retry its writes with backoff. False if a stop came first."""
        deadletter = self.processor.deadletter
        delay = 0.25
        while not deadletter.writable and not await asyncio.to_thread(deadletter.flush):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
                return False
            delay = min(DEADLETTER_RETRY_MAX_S, delay * 2)
        return True

    async def _dispatch(self, tf: TrackedFile, chunk: Chunk) -> None:
        tf.emitted_end = chunk.end
        if chunk.records:
            self.budget.charge(chunk.nbytes)
            tf.inflight.append((chunk.end, chunk.nbytes))
            await self.emit(chunk)
        else:
            self.ledger.ack_all(tf.fid, chunk.start, chunk.end)

    def _at_eof(self, tf: TrackedFile) -> None:
        assert tf.reader is not None
        rotated = tf.rank[0] == 0 or not tf.on_disk
        if tf.entry.gzip:
            if not tf.reader.gz_done:
                tf.waiting = True  # still being compressed: look again later
                return
            rotated = True
        if not rotated:
            tf.waiting = True
            return
        if tf.reader._pending or tf.reader._skipping:  # rotated file ending without a newline: ship nothing of it
            log.warning("rotated file ends with an incomplete line; it is dead-lettered", extra={"path": tf.entry.path, "offset": tf.reader.consumed})
            self.processor.deadletter.add(
                reason="incomplete last line of a rotated file",
                sink=None,
                path=tf.entry.path,
                offset=tf.reader.consumed,
                length=tf.reader.read_pos - tf.reader.consumed,
                event=None,
            )
            self.processor.count("deadletter:incomplete")
            end = tf.reader.read_pos
            tf.emitted_end = end
            self.ledger.ack_all(tf.fid, tf.reader.consumed, end)
        else:
            end = tf.reader.consumed
        tf.drained_at = end
        tf.close()
        log.info("file drained", extra={"path": tf.entry.path, "offset": end})
        self.on_advance(tf.fid, self.ledger.offset(tf.fid) or 0)

    def caught_up(self) -> bool:
        return all(tf.waiting for tf in self.next_per_family())

    # -- main loop -------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, once: bool = False) -> None:
        self._stop = stop
        self.scan()
        self.hints = ChangeHints(asyncio.get_running_loop(), watch_dirs(self.cfg.paths))
        if not once:
            self.hints.start()
        poll_s = self.cfg.poll_interval_ms / 1000
        try:
            while not stop.is_set():
                if self._rescan_due():  # a long backlog is no reason to stop discovering
                    self._look(True)
                if await self.read_round():
                    continue
                if once and self.caught_up():
                    self.scan()  # a rotation during the run: read the new files too
                    if self.caught_up():
                        return
                    continue
                await self._idle(stop, poll_s)
        finally:
            self.hints.stop()

    def _rescan_due(self) -> bool:
        return self.hints is not None and (self.hints.rescan or time.monotonic() - self._last_rescan > self.cfg.rescan_interval_ms / 1000)

    async def _idle(self, stop: asyncio.Event, poll_s: float, *also: asyncio.Event) -> None:
        assert self.hints is not None
        wake = self.hints.wake
        waiters = [asyncio.ensure_future(e.wait()) for e in (wake, stop, *also)]
        try:
            await asyncio.wait(waiters, timeout=poll_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        wake.clear()
        if stop.is_set():
            return
        self._look(self._rescan_due())

    def _look(self, rescan: bool) -> None:
        if rescan:
            assert self.hints is not None
            self.hints.rescan = False
            self.scan()
        self.poll()
        for tf in self.files.values():
            if tf.waiting and (not tf.on_disk or tf.rank[0] == 0 or tf.entry.gzip):
                tf.waiting = False  # rotated or deleted since: read it to its end
            elif tf.waiting and tf.reader is not None and tf.size > tf.reader.read_pos:
                tf.waiting = False

    def at_risk(self) -> list[str]:
        """Files being read that are the oldest backup of their family on disk (next to be deleted)."""
        return [tf.entry.path for tf in self.next_per_family() if tf.rank[0] == 0 and self._oldest_backup.get(tf.family) == tf.entry.path]

    def reconfigure(self, cfg: InputConfig) -> None:
        """New input settings from a reload: globs are re-evaluated at the next look; files that no
        longer match are read to their end and closed; readers already open keep their chunk sizes."""
        self.cfg = cfg
        if self.hints is not None:
            self.hints.rescan = True
            self.hints.wake.set()

    def emitted_offsets(self) -> dict[int, int]:
        """Per open file, the end of what has been handed to the sinks (where a new sink starts)."""
        return {fid: max(tf.emitted_end, tf.entry.offset) for fid, tf in self.files.items()}

    def bytes_behind(self) -> dict[str, int]:
        return {tf.entry.path: max(0, tf.size - tf.entry.offset) for tf in self.files.values() if not tf.entry.complete and not tf.entry.gzip}

    def close(self) -> None:
        for tf in self.files.values():
            tf.close()


def _last_line_end(fd: int, size: int) -> int:
    """Offset just past the last newline at or before `size` (start_at: end never starts mid-line)."""
    pos = size
    while pos > 0:
        n = min(65536, pos)
        block = os.pread(fd, n, pos - n)
        i = block.rfind(b"\n")
        if i >= 0:
            return pos - n + i + 1
        pos -= n
    return 0

"""Turn the files the config selects into lines: discovery, rotation, truncation, deletion, resume.

Each file on disk that the config selects is tracked by identity ((dev, inode) and a fingerprint of its
first bytes) with its own `fid` (a new one after a truncation, so late acknowledgements of the old content
move nothing). Inside a family (an active path and its kube-apiserver backups) the oldest file with unread
data is read first; a backup or deleted file read to its end is *drained* and closed.

The tailer knows nothing of checkpoints, events or sinks. It is given two ports (ports.py):
- a `FileIndex`, which says where a file found on disk resumes and hears what the tailer learns of each
  file (opened, renamed, resized, drained, truncated, gone, lost): checkpoint/files.py;
- a `LineOutput`, which takes the lines read (and says, with its `room` event, when it can take more)
  and the parts of a file that are no lines (an incomplete last line, a corrupt tail): process/stage.py.
While the output has no room, the tailer keeps discovering: a backup that appears is opened at once
(within `max_open_files`), so kube-apiserver deleting it later does not lose it. Reads run in a worker
thread; the loop here only schedules.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from kube_audit_shipper.model import FP_BYTES, Fingerprint, Lines
from kube_audit_shipper.source.config import InputConfig
from kube_audit_shipper.source.discover import Found, Unreadable, discover, watch_dirs
from kube_audit_shipper.source.identity import gzip_complete, is_gzip_fd, read_head
from kube_audit_shipper.source.ports import FileIndex, LineOutput
from kube_audit_shipper.source.reader import CorruptInputError, LineReader
from kube_audit_shipper.source.watch import ChangeHints

log = logging.getLogger(__name__)


@dataclass(eq=False)
class TrackedFile:
    fid: int
    path: str
    key: tuple[int, int]  # (dev, inode)
    fingerprint: Fingerprint
    gzip: bool
    family: str
    rank: tuple[int, str]
    fd: int | None = None
    reader: LineReader | None = None
    size: int = 0
    on_disk: bool = True
    complete: bool = False  # nothing to read: its saved record says so
    drained_at: int | None = None  # offset where a rotated/deleted file ended
    waiting: bool = False  # live file at EOF (or gzip still being written)
    mtime_ns: int = -1  # at the last poll: a file whose size and mtime did not change was not written
    wd: int | None = None  # inotify watch on it (watch.py), when notifications run

    @property
    def done(self) -> bool:
        return self.complete or self.drained_at is not None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self.reader = None


class Tailer:
    def __init__(self, cfg: InputConfig, *, index: FileIndex[Any], output: LineOutput) -> None:
        self.cfg = cfg
        self.index = index
        self.output = output
        self.files: dict[int, TrackedFile] = {}
        self._next_fid = 1
        self.truncations = 0
        self.bytes_read = 0
        self.read_errors: Counter[str] = Counter()  # inputs that became unreadable, by reason (and corrupt files)
        self.unreadable: dict[str, Unreadable] = {}  # inputs that exist but cannot be read right now
        self.ever_unreadable = False  # some input could not be read during this run (run --once reports it)
        self._read_failing: dict[str, Unreadable] = {}  # open files whose last read failed
        self._deferred: dict[tuple[int, int], Found] = {}  # found, not opened: max_open_files were open
        self.hints: ChangeHints | None = None
        self._last_rescan = 0.0
        self._last_look = 0.0
        self._oldest_backup: dict[str, str] = {}  # family -> path of its oldest backup on disk
        self._warned_at_risk: set[str] = set()
        self._stop = asyncio.Event()  # run() gives the pipeline's

    # -- discovery -------------------------------------------------------------------------------------------
    def _new_fid(self) -> int:
        fid = self._next_fid
        self._next_fid += 1
        return fid

    def scan(self) -> None:
        """Match what is on disk to tracked files and saved records. On the loop: it changes shared state,
        and its I/O is small (stat, open, reads of 1 KiB); seeking to an offset in a gzip file, the one slow
        step, happens at the first read, in the reader's thread."""
        for tf in [tf for tf in self.files.values() if tf.fd is not None and not tf.gzip]:
            # what each open file holds now (it may have grown from empty, or been copytruncated, then rotated and
            # compressed since the last look): a new .gz is matched to it by content below
            changed = self._changed_under_read(tf)
            if changed is not None:
                self._truncated(tf, changed)
        problems: list[Unreadable] = []
        found = discover(self.cfg.paths, self.cfg.exclude, problems)
        self._oldest_backup = {}
        for f in found:  # sorted by (family, rank): the first backup of a family is its oldest
            if f.rank[0] == 0 and f.family not in self._oldest_backup:
                self._oldest_backup[f.family] = f.path
        by_inode = {(f.stat.dev, f.stat.ino): f for f in found}
        # only open files are matched by inode: a closed file's inode may already belong to a new file
        for tf in [tf for tf in self.files.values() if tf.fd is not None]:
            now = by_inode.pop(tf.key, None)
            if now is None:
                if tf.on_disk:
                    tf.on_disk = False
                    log.info("file gone from disk; reading the open descriptor to its end", extra={"path": tf.path})
                continue
            tf.on_disk = True
            tf.family, tf.rank, tf.size = now.family, now.rank, now.stat.size
            if tf.path != now.path:
                tf.path = now.path
                self.index.renamed(tf.fid, now.path)
            if not tf.gzip:
                self.index.resized(tf.fid, tf.size, tf.fingerprint)
        for fid, tf in list(self.files.items()):
            if tf.fd is None and (tf.complete or self.index.complete(fid)):  # nothing left to read or acknowledge
                del self.files[fid]
                self.index.released(fid)
        deferred, self._deferred = self._deferred, {}
        for f in sorted(by_inode.values(), key=lambda f: (f.family, f.rank)):  # oldest first: next to be deleted
            if sum(1 for tf in self.files.values() if tf.fd is not None) >= self.cfg.max_open_files:
                self._deferred[(f.stat.dev, f.stat.ino)] = f
                continue
            self._adopt(f, problems)
        if self._deferred and not deferred:
            log.warning("max_open_files input files are open; newer files are opened as others are read to their end", extra={"waiting": len(self._deferred)})
        self._set_unreadable({**{p.path: p for p in problems}, **self._read_failing})
        seen = {(f.stat.dev, f.stat.ino) for f in found}
        for key, f in deferred.items():
            if key not in seen:
                self.index.lost(f.path, f.stat.size, "deleted before it could be opened (max_open_files files were open)")
        self.index.present(seen)
        self._last_rescan = time.monotonic()
        for path in self.at_risk():
            if path not in self._warned_at_risk:
                self._warned_at_risk.add(path)
                log.warning(
                    "the oldest unread file is the oldest rotated backup on disk: kube-apiserver may delete it at its next "
                    "rotation (--audit-log-maxbackup) before it is shipped; the agent is falling behind",
                    extra={"path": path},
                )

    def _adopt(self, f: Found, problems: list[Unreadable]) -> None:
        try:
            fd = os.open(f.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # deleted (or renamed) since it was listed: the next scan sees what is there
            return
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
        saved = self.index.lookup(f.stat, head)
        if saved is None:
            for tf in self.files.values():  # same content as a tracked file (the .gz of a backup being drained)?
                if tf.fingerprint.distinctive(head) and tf.fingerprint.matches(head):
                    os.close(fd)
                    return
            offset, complete = self._start_offset(f, fd, gz)
            log.info("new file", extra={"path": f.path, "offset": offset, "skipped": complete})
        else:
            offset, complete = saved.offset, saved.complete
        fid = self._new_fid()
        self.index.opened(fid, f.stat, head, gz, saved, offset, complete)
        tf = TrackedFile(fid, f.path, (f.stat.dev, f.stat.ino), Fingerprint.of(head), gz, f.family, f.rank, fd=fd, size=f.stat.size, complete=complete)
        self.files[fid] = tf
        if complete:
            tf.close()
            return
        if self.hints is not None:
            tf.wd = self.hints.watch_file(fd)
        try:
            tf.reader = LineReader(fd, offset=offset, gz=gz, chunk_bytes=self.cfg.read_chunk_bytes, max_line_bytes=self.cfg.max_line_bytes)
        except CorruptInputError as exc:
            self._corrupt(tf, offset, str(exc))

    def _start_offset(self, found: Found, fd: int, gz: bool) -> tuple[int, bool]:
        """Offset (and completeness) for a file with no saved record."""
        if not self.index.first_start:
            return 0, False
        if found.rank[0] == 0 and not self.cfg.backfill_rotated:
            return (0, True) if gz else (_last_line_end(fd, found.stat.size), True)
        if self.cfg.start_at == "end" and not gz:
            return _last_line_end(fd, found.stat.size), False
        return 0, False

    def _corrupt(self, tf: TrackedFile, offset: int, reason: str) -> None:
        """A file that cannot be read further: its rest is one dead letter with where and why; move on."""
        self.read_errors["corrupt"] += 1
        log.error("cannot read file further; its remaining content is recorded as a dead letter", extra={"path": tf.path, "offset": offset, "reason": reason})
        self.output.unreadable_rest(tf.fid, tf.path, offset, reason)
        self._close(tf)
        tf.drained_at = offset
        self.index.abandoned(tf.fid, offset)

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

    # -- polling ---------------------------------------------------------------------------------------------
    def poll(self) -> None:
        """fstat every open file: growth, truncation, rewritten head (read again only when the file was written
        since the last poll). On the loop; cheap."""
        for tf in list(self.files.values()):
            if tf.fd is None or tf.reader is None:
                continue
            try:
                st = os.fstat(tf.fd)
            except OSError:
                continue
            if st.st_size == tf.size and st.st_mtime_ns == tf.mtime_ns:
                continue  # not written since the last poll: no growth, no truncation, same head
            tf.size, tf.mtime_ns = st.st_size, st.st_mtime_ns
            if tf.gzip:
                continue
            if st.st_size < tf.reader.read_pos:
                self._truncated(tf, f"size {st.st_size} below read offset {tf.reader.read_pos}")
                continue
            if not self._check_head(tf):
                self._truncated(tf, "first bytes changed")
                continue
            self.index.resized(tf.fid, tf.size, tf.fingerprint)
            if st.st_size > tf.reader.read_pos:
                tf.waiting = False

    def _check_head(self, tf: TrackedFile) -> bool:
        """Read a plain file's head again: False if it no longer starts with the fingerprinted bytes, or with
        the bytes the reader read at its start (rewritten: truncated and written again), else grow the
        fingerprint while the file is shorter than 1 KiB."""
        if tf.gzip or tf.fd is None:
            return True
        head = os.pread(tf.fd, FP_BYTES, 0)
        if not tf.fingerprint.matches(head):
            return False
        seen = tf.reader.head if tf.reader is not None else b""
        common = min(len(seen), len(head))
        if seen[:common] != head[:common]:
            return False
        if len(head) > tf.fingerprint.length:
            tf.fingerprint = Fingerprint.of(head)
        return True

    def _changed_under_read(self, tf: TrackedFile) -> str | None:
        """After a read of a plain file: why what was read may not be the file's content (it was truncated, or
        rewritten from its start, while or before it was read), or None."""
        if tf.gzip or tf.fd is None or tf.reader is None:
            return None
        size = os.fstat(tf.fd).st_size
        if size < tf.reader.read_pos:
            return f"size {size} below read offset {tf.reader.read_pos}"
        known = tf.fingerprint
        if not self._check_head(tf):
            return "first bytes changed"
        if tf.fingerprint != known or size != tf.size:  # the record learns it now: the file may be gone (and gzipped) before the next poll
            tf.size = size
            self.index.resized(tf.fid, size, tf.fingerprint)
        return None

    def _truncated(self, tf: TrackedFile, why: str) -> None:
        self.truncations += 1
        log.warning(
            "file truncated (copytruncate?); reading it again from offset 0; lines written after the last read and before the truncation are lost",
            extra={"path": tf.path, "why": why},
        )
        del self.files[tf.fid]
        self.output.retired(tf.fid)
        head = os.pread(tf.fd, FP_BYTES, 0) if tf.fd is not None else b""
        assert tf.reader is not None
        tf.reader.reset()
        new = TrackedFile(
            self._new_fid(), tf.path, tf.key, Fingerprint.of(head), tf.gzip, tf.family, tf.rank, fd=tf.fd, reader=tf.reader, size=tf.size, wd=tf.wd
        )
        self.files[new.fid] = new
        self.index.truncated(tf.fid, new.fid, head)

    # -- reading ---------------------------------------------------------------------------------------------
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

    def _read(self, tf: TrackedFile) -> Lines:
        """One chunk of whole lines (worker thread)."""
        assert tf.reader is not None
        lines = tf.reader.read()
        self.bytes_read += lines.raw_bytes
        return lines

    async def read_round(self) -> bool:
        """One chunk from the current file of each family. True if anything was read."""
        progressed = False
        for tf in self.next_per_family():
            if tf.waiting:
                continue
            if not await self._room():
                return progressed
            if tf.fid not in self.files or tf.reader is None:  # truncated/closed while waiting
                continue
            try:
                lines = await asyncio.to_thread(self._read, tf)
            except CorruptInputError as exc:
                self._corrupt(tf, tf.reader.consumed if tf.reader is not None else 0, str(exc))
                continue
            except OSError as exc:  # nothing was consumed: the same chunk is read again at the next look
                self._read_failing[tf.path] = Unreadable.of(tf.path, exc)
                self._set_unreadable({**self.unreadable, **self._read_failing})
                tf.waiting = True
                continue
            if self._read_failing.pop(tf.path, None) is not None:
                self._set_unreadable({k: v for k, v in self.unreadable.items() if k != tf.path})
            if (lines.raw_bytes or lines.eof) and tf.fid in self.files:  # at eof too: never drain at an offset past a truncation
                changed = self._changed_under_read(tf)
                if changed is not None:  # what was read may mix old and new content: read the file again from 0
                    self._truncated(tf, changed)
                    progressed = True
                    continue
            if lines.lines or lines.oversize:
                progressed = True
                await self.output.take(tf.fid, tf.path, lines)
            elif lines.eof or lines.gzip_incomplete:
                self._at_eof(tf)
                if tf.drained_at is not None:  # drained: the family's next file can be read now, not after an idle poll
                    progressed = True
        return progressed

    async def _room(self) -> bool:
        """Wait while the output takes no more lines (memory used up, dead letters the disk refuses), and keep
        discovering meanwhile: a backup that appears is opened at once (within max_open_files), so kube-apiserver
        deleting it later (--audit-log-maxbackup) does not lose it. False if a stop came."""
        room = self.output.room
        while not room.is_set():
            if self._stop.is_set():
                return False
            await self._idle(self._stop, self.cfg.poll_interval_ms / 1000, room)
        return True

    def _at_eof(self, tf: TrackedFile) -> None:
        assert tf.reader is not None
        rotated = tf.rank[0] == 0 or not tf.on_disk
        if tf.gzip:
            if not tf.reader.gz_done:
                tf.waiting = True  # still being compressed: look again later
                return
            rotated = True
        if not rotated:
            tf.waiting = True
            return
        end = tf.reader.consumed
        if tf.reader.read_pos > end:  # a rotated file ending without a newline: that tail is all there will be
            log.warning("rotated file ends in an incomplete line; recorded as a dead letter", extra={"path": tf.path, "offset": end})
            self.output.incomplete_tail(tf.fid, tf.path, end, tf.reader.read_pos - end)
            end = tf.reader.read_pos
        tf.drained_at = end
        self._close(tf)
        log.info("file drained", extra={"path": tf.path, "offset": end})
        self.index.drained(tf.fid, end)

    def caught_up(self) -> bool:
        return all(tf.waiting for tf in self.next_per_family())

    # -- main loop -------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, once: bool = False) -> None:
        self._stop = stop
        self.hints = ChangeHints(asyncio.get_running_loop(), watch_dirs(self.cfg.paths))
        if not once:
            self.hints.start()
            for tf in self.files.values():  # opened by a scan before run() (the first checkpoint's)
                if tf.fd is not None and tf.wd is None:
                    tf.wd = self.hints.watch_file(tf.fd)
        self.scan()
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
        """Wait for a hint (or `also`, or stop), then look. While every open file is watched, the fstat poll is
        only a safety net (`rescan_interval_ms`); either way two looks are at least `poll_s` apart, so a
        file written a thousand times a second still costs a few looks a second."""
        assert self.hints is not None
        wake = self.hints.wake
        watched = self.hints.arm() and all(tf.wd is not None for tf in self.files.values() if tf.fd is not None)
        timeout = max(poll_s, self.cfg.rescan_interval_ms / 1000) if watched else poll_s
        await _first(timeout, wake, stop, *also)
        if stop.is_set():
            return
        pace = self._last_look + poll_s - time.monotonic()
        if pace > 0 and not any(e.is_set() for e in also):
            await _first(pace, stop, *also)  # the changes of that time are merged into this look
            if stop.is_set() or any(e.is_set() for e in also):
                return  # room came back first: read now; the look waits for its pace
        wake.clear()
        self._last_look = time.monotonic()
        self._look(self._rescan_due())

    def _look(self, rescan: bool) -> None:
        if rescan:
            assert self.hints is not None
            self.hints.rescan = False
            self.scan()
        self.poll()
        for tf in self.files.values():
            if tf.waiting and (not tf.on_disk or tf.rank[0] == 0 or tf.gzip):
                tf.waiting = False  # rotated or deleted since: read it to its end
            elif tf.waiting and tf.reader is not None and tf.size > tf.reader.read_pos:
                tf.waiting = False

    def at_risk(self) -> list[str]:
        """Files being read that are the oldest backup of their family on disk (next to be deleted)."""
        return [tf.path for tf in self.next_per_family() if tf.rank[0] == 0 and self._oldest_backup.get(tf.family) == tf.path and not _read_to_end(tf)]

    def reconfigure(self, cfg: InputConfig) -> None:
        """New input settings from a reload: globs are re-evaluated at the next look; files that no
        longer match are read to their end and closed; readers already open keep their chunk sizes."""
        self.cfg = cfg
        if self.hints is not None:
            self.hints.rescan = True
            self.hints.wake.set()

    def _close(self, tf: TrackedFile) -> None:
        if tf.wd is not None and self.hints is not None:
            self.hints.unwatch_file(tf.wd)
        tf.wd = None
        tf.close()

    def close(self) -> None:
        for tf in self.files.values():
            self._close(tf)


def _read_to_end(tf: TrackedFile) -> bool:
    """A plain file read up to its size: the next read round drains it; it is not behind."""
    return not tf.gzip and tf.reader is not None and tf.reader.consumed >= tf.size


async def _first(timeout: float, *events: asyncio.Event) -> None:
    """Wait until one of `events` is set, at most `timeout` seconds."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


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

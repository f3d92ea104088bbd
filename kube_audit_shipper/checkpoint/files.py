"""Per-file records: where each file resumes, kept in step with what the reader finds and the sinks acknowledge.

A `FileRecord` is one line of checkpoints.json: a file's identity ((dev, inode) and the fingerprint of its
first bytes), its acknowledged offset, whether it is complete. `FileRecords` owns them for a pipeline:
- `lookup` matches a file found on disk to a saved record:
  1. same (dev, ino) and the head still hashes to the record's fingerprint: the same file, possibly renamed
     (rotation): resume at its offset;
  2. same (dev, ino) but a different head (or the record is of a file that was empty and read to its end,
     and the inode now holds content): the inode was reused, or the file truncated and rewritten: a new
     file, read from 0. The stale record is kept until the scan is over (its content may turn up moved,
     e.g. gzipped, under another inode: case 3); then, unless complete, it is reported lost and retired;
  3. another inode whose head hashes to the fingerprint of a record no live file holds, and the
     fingerprint covers a whole line or 1 KiB: the same content moved (kube-apiserver gzipped a backup,
     `audit-<ts>.log` -> `audit-<ts>.log.gz`, or it moved across devices): resume there;
- the reader's events (opened, renamed, resized, drained, truncated, released) keep the records true, and
  `advanced` moves a record's offset when the ledger says every sink holds more of the file;
- `present`, after each scan, notes files gone from disk: one gone before it was read to its end is lost
  (an error naming it and its unread bytes, counted), also when it went while the agent was not running;
  records of files gone longer than forget_after_s are forgotten.
No file of checkpoints.json at all means a first start (input.start_at and backfill_rotated apply).
"""

from __future__ import annotations

import logging
import time

import msgspec

from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.model import FileStat, Fingerprint

log = logging.getLogger(__name__)


class FileRecord(msgspec.Struct, kw_only=True):
    path: str
    dev: int
    ino: int
    fp_len: int
    fp: str
    gzip: bool = False
    offset: int = 0
    complete: bool = False
    gone_since: float | None = None
    size: int = 0  # last size seen on disk (plain files; 0 for gzip): what is lost if it goes before it is read
    lost: bool = False  # it went from disk before it was read to its end (reported and counted once)
    detected_upto: int = 0  # detection has seen every line up to here (the saved detection state includes them)
    pending_alerts: list[str] = []  # alerts raised on lines past `offset`, not yet acknowledged by every target

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(self.fp_len, self.fp)

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.ino)


def _continues(record: FileRecord, head: bytes) -> bool:
    """The file whose first bytes are `head`, on the record's inode, is the record's file (not a new one)."""
    if record.fp_len == 0 and record.complete and head:
        return False  # an empty file read to its end: content on its inode now is a new file's
    return record.fingerprint.matches(head)


class FileRecords:
    def __init__(self, records: list[FileRecord] | None, *, ledger: Ledger, forget_after_s: float, lost_grace_s: float) -> None:
        self.first_start = records is None
        self.records: list[FileRecord] = list(records or [])
        self.ledger = ledger
        self.forget_after_s = forget_after_s
        self.lost_grace_s = lost_grace_s  # kube-apiserver gzips a backup before it removes the plain file
        self.lost_files = 0
        self.lost_bytes = 0
        self._by_fid: dict[int, FileRecord] = {}
        self._drained_at: dict[int, int] = {}  # fid -> offset where the reader found the file's end
        self._stale: dict[int, FileRecord] = {}  # id -> record whose inode a scan found holding another file
        self._scans = 0

    # -- matching ------------------------------------------------------------------------------------------
    def lookup(self, stat: FileStat, head: bytes) -> FileRecord | None:
        """The saved record `stat` continues, or None: a file to start (the caller decides where)."""
        held = {id(r) for r in self._by_fid.values()}
        for r in self.records:
            if r.key == (stat.dev, stat.ino) and id(r) not in held:
                if _continues(r, head):
                    return r
                self._stale[id(r)] = r  # its inode holds another file now; retired after the scan unless claimed
        for r in self.records:
            if id(r) in held or r.key == (stat.dev, stat.ino):
                continue
            if r.fp_len and r.fingerprint.distinctive(head) and r.fingerprint.matches(head):
                return r
        return None

    # -- what the reader found -----------------------------------------------------------------------------
    def opened(self, fid: int, stat: FileStat, head: bytes, gz: bool, saved: FileRecord | None, offset: int, complete: bool) -> None:
        """The reader tracks `stat` as `fid`, continuing `saved` or new at `offset` (complete: nothing to read)."""
        if saved is None:
            fp = Fingerprint.of(head)
            saved = FileRecord(
                path=stat.path,
                dev=stat.dev,
                ino=stat.ino,
                fp_len=fp.length,
                fp=fp.digest,
                gzip=gz,
                offset=offset,
                complete=complete,
                size=0 if gz else stat.size,
            )
            self.records.append(saved)
        else:
            if saved.key != (stat.dev, stat.ino):
                log.info("file found again under a new identity (compressed or moved)", extra={"from": saved.path, "to": stat.path, "offset": saved.offset})
            saved.path, saved.dev, saved.ino, saved.gzip = stat.path, stat.dev, stat.ino, gz
            if not gz:
                saved.size = stat.size
        saved.gone_since = None
        self._by_fid[fid] = saved
        self.ledger.open(fid, saved.offset)

    def renamed(self, fid: int, path: str) -> None:
        record = self._by_fid.get(fid)
        if record is not None and record.path != path:
            log.info("file renamed", extra={"from": record.path, "to": path})
            record.path = path

    def resized(self, fid: int, size: int, fingerprint: Fingerprint) -> None:
        """A plain file's size now, and its fingerprint (it grows with a file shorter than 1 KiB)."""
        record = self._by_fid.get(fid)
        if record is not None:
            record.size = size
            record.fp_len, record.fp = fingerprint.length, fingerprint.digest

    def drained(self, fid: int, end: int) -> None:
        """The reader found the end of a rotated or deleted file at `end`: complete once acknowledged there."""
        self._drained_at[fid] = end
        record = self._by_fid.get(fid)
        if record is not None and record.offset >= end:
            record.complete = True

    def abandoned(self, fid: int, offset: int) -> None:
        """A file that cannot be read past `offset` (corrupt): what follows is dead-lettered as a whole."""
        self._drained_at[fid] = offset
        record = self._by_fid.get(fid)
        if record is not None:
            record.complete = True

    def truncated(self, fid: int, new_fid: int, head: bytes) -> None:
        """Copytruncate: the same file starts over at 0 under `new_fid`; the old fid's ranges move nothing."""
        self.ledger.close(fid)
        self._drained_at.pop(fid, None)
        record = self._by_fid.pop(fid, None)
        if record is None:
            return
        fp = Fingerprint.of(head)
        record.fp_len, record.fp, record.offset, record.complete = fp.length, fp.digest, 0, False
        self._by_fid[new_fid] = record
        self.ledger.open(new_fid, 0)

    def released(self, fid: int) -> None:
        """The reader is done with `fid` (read to its end and acknowledged, or closed)."""
        self._by_fid.pop(fid, None)
        self._drained_at.pop(fid, None)
        self.ledger.close(fid)

    def advanced(self, fid: int, offset: int) -> None:
        """Every sink holds `fid` up to `offset` (the ledger's word)."""
        record = self._by_fid.get(fid)
        if record is None:
            return
        record.offset = offset
        end = self._drained_at.get(fid)
        if end is not None and offset >= end:
            record.complete = True

    def complete(self, fid: int) -> bool:
        record = self._by_fid.get(fid)
        return record is not None and record.complete

    # -- after each scan -----------------------------------------------------------------------------------
    def present(self, seen: set[tuple[int, int]]) -> None:
        """The identities on disk now: records gone from disk are noted, lost ones reported, old ones forgotten."""
        now = time.time()
        held = {id(r) for r in self._by_fid.values()}
        stale, self._stale = self._stale, {}
        for r in list(self.records):
            if id(r) in stale and id(r) not in held:  # its inode holds another file now, and no moved copy claimed it
                if not r.complete and not r.lost:
                    why = "truncated or replaced" + (" while the agent was not running" if self._scans == 0 else " while not open")
                    self.lost(r.path, max(0, r.size - r.offset), why)
                self.records.remove(r)
                continue
            if r.key in seen:
                r.gone_since = None
                continue
            if r.gone_since is None:
                r.gone_since = now
            if not r.complete and not r.lost and id(r) not in held and (self._scans == 0 or now - r.gone_since >= self.lost_grace_s):
                r.lost = True
                why = "deleted before it was read to its end" + (" (while the agent was not running)" if self._scans == 0 else "")
                self.lost(r.path, max(0, r.size - r.offset), why)
            elif now - r.gone_since > self.forget_after_s and id(r) not in held:
                self.records.remove(r)
        self.first_start = False
        self._scans += 1

    def lost(self, path: str, unread_bytes: int, why: str) -> None:
        """A file went from disk before it was read: its unread events cannot be shipped. Said and counted."""
        self.lost_files += 1
        self.lost_bytes += unread_bytes
        log.error("input file lost: its unread events are not shipped", extra={"path": path, "unread_bytes": unread_bytes, "why": why})

    # -- detection across restarts -------------------------------------------------------------------------
    def detection_resume(self, fid: int) -> tuple[int, list[bytes]]:
        """Where detection resumes in `fid` (lines before it are in the restored state, so they are not detected
        on again) and the alerts raised past its acknowledged offset before the restart, to deliver again.
        Handed out once per record and process."""
        record = self._by_fid.get(fid)
        if record is None:
            return 0, []
        pending = [a.encode() for a in record.pending_alerts]
        record.pending_alerts = []
        return max(record.detected_upto, record.offset), pending

    # -- for checkpoints, metrics and status ---------------------------------------------------------------
    def snapshot(self, detection: dict[int, tuple[int, list[bytes]]] | None = None) -> list[FileRecord]:
        """Copies of the records as they are now (written by the checkpoint writer in its thread), with where
        detection is in each file being read and its alerts not yet acknowledged (`detection`, by fid)."""
        copies = {id(r): msgspec.structs.replace(r) for r in self.records}
        for fid, (upto, pending) in (detection or {}).items():
            record = self._by_fid.get(fid)
            copy = copies.get(id(record)) if record is not None else None
            if copy is not None:
                copy.detected_upto, copy.pending_alerts = upto, [a.decode() for a in pending]
        return list(copies.values())

    def bytes_behind(self) -> dict[str, int]:
        """Per plain file being read: bytes on disk not yet acknowledged by every sink."""
        return {r.path: max(0, r.size - r.offset) for r in self._by_fid.values() if not r.complete and not r.gzip}

    def offsets(self) -> dict[int, int]:
        """Per file being read: the acknowledged offset."""
        return {fid: r.offset for fid, r in self._by_fid.items()}

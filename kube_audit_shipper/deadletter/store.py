"""The dead-letter store: what could not be shipped, with where it came from and why.

`<state_dir>/deadletter/<20-digit seq>.ndjson`, one JSON record per line, version 1:

    {"v": 1, "time": 1763805600.25, "sink": null, "reason": "malformed JSON: ...",
     "source": {"path": "/var/log/kubernetes/audit/audit.log", "offset": 1234, "length": 87},
     "event": "<the line, when valid UTF-8 and at most max_event_bytes>",
     "event_b64": "<the line base64-encoded, when not valid UTF-8 and small enough>"}

`sink` is null for input problems (bad lines, oversize lines) and names the sink for rejections.
Oversize lines and anything over `max_event_bytes` keep only their location. Bounded: when the store
passes `max_bytes`, whole segments are removed oldest first and counted in `evicted`. `sync()` makes
every record written so far durable; the checkpoint writer calls it before moving a checkpoint past
the lines those records stand for. `kube-audit-shipper deadletter list|replay` reads the store; a
replayed record's id ("<segment>:<line>") is appended to `replayed.txt` and no longer listed.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from kube_audit_shipper.durable import append_all, ensure_dir, fsync_dir
from kube_audit_shipper.obs.logs import Scrubber
from kube_audit_shipper.obs.state_writes import StateWrites

log = logging.getLogger(__name__)

VERSION = 1
MAX_REASON_CHARS = 2000  # a backend may answer with a whole page; the reason keeps its start
REPLAYED = "replayed.txt"  # ids of records sent again by `deadletter replay`, one per line


class DeadLetterStore:
    """Appends records; never raises for a failed write. A record that cannot be written yet (a full or
    read-only state_dir) stays in memory, `writable` turns False (the reader then waits before reading
    more: `flush` is retried with backoff), and `sync` raises, so no checkpoint moves past lines whose
    dead letters are not durable. When the disk takes writes again, everything held is written in order."""

    def __init__(
        self,
        state_dir: str | Path,
        *,
        max_bytes: int,
        max_event_bytes: int,
        state_writes: StateWrites | None = None,
        scrub: Callable[[str], str] | None = None,
    ) -> None:
        self.dir = Path(state_dir) / "deadletter"
        self.max_bytes = max_bytes
        self.segment_bytes = max(1 << 20, max_bytes // 8)
        self.max_event_bytes = max_event_bytes
        self._state_writes = state_writes or StateWrites()
        self._scrub = scrub or Scrubber().text  # a backend's reason may echo request headers or tokens
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._seg_size = 0
        self._dirty = False
        self._pending: list[bytes] = []  # encoded records not yet written (the disk refused them)
        self._encoder = msgspec.json.Encoder()
        self.evicted_records = 0
        self.records = 0

    def _segments(self) -> list[Path]:
        try:
            return sorted(p for p in self.dir.iterdir() if p.suffix == ".ndjson" and p.stem.isdigit())
        except FileNotFoundError:
            return []

    def _open_segment(self) -> None:
        ensure_dir(self.dir, 0o700)
        segs = self._segments()
        seq = int(segs[-1].stem) + 1 if segs else 1
        self._fd = os.open(self.dir / f"{seq:020d}.ndjson", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._seg_size = 0
        fsync_dir(self.dir)

    def _evict(self) -> None:
        segs = self._segments()
        total = sum(p.stat().st_size for p in segs)
        while total > self.max_bytes and len(segs) > 1:
            oldest = segs.pop(0)
            with oldest.open("rb") as fh:
                self.evicted_records += sum(1 for _ in fh)
            total -= oldest.stat().st_size
            oldest.unlink()

    def add(self, *, reason: str, sink: str | None, path: str | None, offset: int | None, length: int | None, event: bytes | None) -> None:
        reason = self._scrub(reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "...")
        record: dict[str, Any] = {"v": VERSION, "time": round(time.time(), 3), "sink": sink, "reason": reason}
        if path is not None:
            record["source"] = {"path": path, "offset": offset, "length": length}
        if event is not None and len(event) <= self.max_event_bytes:
            try:
                record["event"] = event.decode("utf-8")
            except UnicodeDecodeError:
                record["event_b64"] = base64.b64encode(event).decode("ascii")
        line = self._encoder.encode(record) + b"\n"
        with self._lock:
            self._pending.append(line)
            self.records += 1
            self._write_pending()

    def _write_pending(self) -> bool:
        """Under _lock: write what is held, in order. False (and the failure recorded) if the disk refused."""
        try:
            while self._pending:
                line = self._pending[0]
                if self._fd is None or self._seg_size >= self.segment_bytes:
                    if self._fd is not None:
                        os.fsync(self._fd)
                        os.close(self._fd)
                        self._fd = None
                    self._open_segment()
                    self._evict()
                assert self._fd is not None
                append_all(self._fd, line)
                self._pending.pop(0)
                self._seg_size += len(line)
                self._dirty = True
        except OSError as exc:
            self._state_writes.failed("deadletter", self.dir, exc)
            return False
        self._state_writes.ok("deadletter")
        return True

    @property
    def writable(self) -> bool:
        """Nothing is held back: every record added so far has been written."""
        return not self._pending

    def flush(self) -> bool:
        """Try again to write what is held; True when nothing is held any more."""
        with self._lock:
            return self._write_pending()

    def sync(self) -> None:
        """Make every record added so far durable; raises OSError when that cannot be done now."""
        with self._lock:
            if not self._write_pending():
                raise OSError(errno.EAGAIN, f"{len(self._pending)} dead-letter record(s) held in memory: the state directory refuses writes")
            if self._fd is not None and self._dirty:
                try:
                    os.fsync(self._fd)
                except OSError as exc:
                    self._state_writes.failed("deadletter", self.dir, exc)
                    raise
                self._dirty = False

    def close(self) -> None:
        with self._lock:
            self._write_pending()
            if self._fd is not None:
                try:
                    os.fsync(self._fd)
                finally:
                    os.close(self._fd)
                    self._fd = None
            if self._pending:  # not lost: their lines are not covered by any checkpoint, so they are read again
                log.error(
                    "dead-letter records could not be written before exit; the lines they stand for are read again at the next start",
                    extra={"records": len(self._pending), "dir": str(self.dir)},
                )

    def iter_records(self, *, include_replayed: bool = True) -> Iterator[dict[str, Any]]:
        """Every stored record, oldest first, with its `id` ("<segment>:<line>"); a torn last line
        after a crash is skipped. `include_replayed=False` leaves out records marked replayed."""
        replayed = set() if include_replayed else self.replayed_ids()
        for seg in self._segments():
            with seg.open("rb") as fh:
                for n, line in enumerate(fh, 1):
                    rid = f"{seg.stem}:{n}"
                    if rid in replayed:
                        continue
                    try:
                        record = msgspec.json.decode(line)
                    except msgspec.DecodeError:
                        continue
                    if isinstance(record, dict):
                        if isinstance(record.get("reason"), str):  # records written before reasons were scrubbed
                            record["reason"] = self._scrub(record["reason"])
                        record["id"] = rid
                        yield record

    def replayed_ids(self) -> set[str]:
        try:
            return set((self.dir / REPLAYED).read_text(encoding="utf-8").split())
        except FileNotFoundError:
            return set()

    def mark_replayed(self, ids: list[str]) -> None:
        """Record (durably) that these records were sent again."""
        ensure_dir(self.dir, 0o700)
        fd = os.open(self.dir / REPLAYED, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            append_all(fd, "".join(i + "\n" for i in ids).encode())
            os.fsync(fd)
        finally:
            os.close(fd)

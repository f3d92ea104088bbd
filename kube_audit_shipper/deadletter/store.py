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
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from kube_audit_shipper.checkpoint.store import fsync_dir

VERSION = 1
REPLAYED = "replayed.txt"  # ids of records sent again by `deadletter replay`, one per line


class DeadLetterStore:
    def __init__(self, state_dir: str | Path, *, max_bytes: int, max_event_bytes: int) -> None:
        self.dir = Path(state_dir) / "deadletter"
        self.max_bytes = max_bytes
        self.segment_bytes = max(1 << 20, max_bytes // 8)
        self.max_event_bytes = max_event_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._seg_size = 0
        self._dirty = False
        self._encoder = msgspec.json.Encoder()
        self.evicted_records = 0
        self.records = 0

    def _segments(self) -> list[Path]:
        try:
            return sorted(p for p in self.dir.iterdir() if p.suffix == ".ndjson" and p.stem.isdigit())
        except FileNotFoundError:
            return []

    def _open_segment(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        segs = self._segments()
        seq = int(segs[-1].stem) + 1 if segs else 1
        self._fd = os.open(self.dir / f"{seq:020d}.ndjson", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
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
            if self._fd is None or self._seg_size >= self.segment_bytes:
                if self._fd is not None:
                    os.fsync(self._fd)
                    os.close(self._fd)
                self._open_segment()
                self._evict()
            assert self._fd is not None
            os.write(self._fd, line)
            self._seg_size += len(line)
            self._dirty = True
            self.records += 1

    def sync(self) -> None:
        with self._lock:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._dirty = False

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None

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
                    record["id"] = rid
                    yield record

    def replayed_ids(self) -> set[str]:
        try:
            return set((self.dir / REPLAYED).read_text(encoding="utf-8").split())
        except FileNotFoundError:
            return set()

    def mark_replayed(self, ids: list[str]) -> None:
        """Record (durably) that these records were sent again."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / REPLAYED, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, "".join(i + "\n" for i in ids).encode())
            os.fsync(fd)
        finally:
            os.close(fd)

"""The checkpoint file: per file identity, the offset every sink has acknowledged.

`<state_dir>/checkpoints.json`, version 1:

    {"version": 1, "written_at": 1763805600.5,
     "files": [{"path": "/var/log/kubernetes/audit/audit-2026-11-22T10-00-00.000.log",
                "dev": 64768, "ino": 1311, "fp_len": 1024, "fp": "9f2c4e0b5a1d7c33",
                "gzip": false, "offset": 104857187, "complete": true, "gone_since": null}]}

`offset` is a content offset (decompressed for gzip) at a line boundary; `complete` means the file
was rotated and every line of it is acknowledged; `gone_since` is when the file was last seen missing
(unix time), so entries of deleted files are forgotten after `forget_after_s`. Written atomically:
temp file, fsync, rename over the old file, fsync of the directory. The absence of the file means
"first start" (start_at and backfill_rotated apply).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec

from kube_audit_shipper.durable import ensure_dir, write_atomic
from kube_audit_shipper.errors import StateError
from kube_audit_shipper.source.identity import Fingerprint

VERSION = 1


class Entry(msgspec.Struct, kw_only=True):
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

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(self.fp_len, self.fp)


class _Version(msgspec.Struct):
    version: int


class _File(msgspec.Struct, kw_only=True):
    version: int
    written_at: float
    files: list[Entry]


class CheckpointStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / "checkpoints.json"
        self._encoder = msgspec.json.Encoder()
        self._last: bytes | None = None
        self._lock = threading.Lock()  # a periodic write may still run in its thread when the final one starts
        self._generation = 0  # of the newest snapshot written: an older snapshot never overwrites it
        self.writes = 0
        self.last_write = 0.0  # unix time of the last write (0: none by this process)

    def load(self) -> list[Entry] | None:
        """The saved entries, or None when there is no state yet (first start)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            version = msgspec.json.decode(raw, type=_Version).version
            if version != VERSION:
                raise StateError(f"{self.path}: checkpoint version {version} is not supported (this agent writes {VERSION})")
            doc = msgspec.json.decode(raw, type=_File)
        except msgspec.DecodeError as exc:
            raise StateError(
                f"{self.path} is not a valid checkpoint file ({exc}); it is written atomically, so this is damage from "
                "outside the agent: move it away to start over (start_at/backfill_rotated then apply as on a first start)"
            ) from exc
        return doc.files

    def save(self, entries: list[Entry], generation: int = 0) -> bool:
        """Write the entries if they changed; True if a write happened. `generation` orders snapshots
        taken on the event loop: a write of an older snapshot that lost the race is skipped."""
        body = self._encoder.encode(sorted(entries, key=lambda e: (e.path, e.dev, e.ino)))
        with self._lock:
            if body == self._last or generation < self._generation:
                return False
            self._generation = generation
            doc = b'{"version":%d,"written_at":%.3f,"files":%s}' % (VERSION, time.time(), body)
            ensure_dir(self.path.parent, 0o700)
            write_atomic(self.path, doc)
            self._last = body
            self.writes += 1
            self.last_write = time.time()
            return True

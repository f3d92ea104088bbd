"""The checkpoint file: per file identity, the offset every sink has acknowledged.

`<state_dir>/checkpoints.json`, version 1:

    {"version": 1, "written_at": 1763805600.5,
     "files": [{"path": "/var/log/kubernetes/audit/audit-2026-11-22T10-00-00.000.log",
                "dev": 64768, "ino": 1311, "fp_len": 1024, "fp": "9f2c4e0b5a1d7c33",
                "gzip": false, "offset": 104857187, "complete": true, "gone_since": null,
                "size": 104857187, "lost": false}]}

`offset` is a content offset (decompressed for gzip) at a line boundary; `complete` means the file
was rotated and every line of it is acknowledged; `gone_since` is when the file was last seen missing
(unix time), so records of deleted files are forgotten after `forget_after_s`; `size` is the last size seen
(plain files) and `lost` says the file went before it was read to its end (reported once). The records
are checkpoint/files.py's FileRecord; a file written before `size` and `lost` existed still loads. Written atomically:
temp file, fsync, rename over the old file, fsync of the directory. The absence of the file means
"first start" (start_at and backfill_rotated apply).
"""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import msgspec

from kube_audit_shipper.checkpoint.files import FileRecord
from kube_audit_shipper.durable import ensure_dir, write_atomic
from kube_audit_shipper.errors import StateError

VERSION = 1


class _Version(msgspec.Struct):
    version: int


class _File(msgspec.Struct, kw_only=True):
    version: int
    written_at: float
    files: list[FileRecord]
    detection: str | None = None  # base64 of the detection engine's state, consistent with the files' offsets


class CheckpointStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / "checkpoints.json"
        self._encoder = msgspec.json.Encoder()
        self._last: bytes | None = None
        self._lock = threading.Lock()  # a periodic write may still run in its thread when the final one starts
        self._generation = 0  # of the newest snapshot written: an older snapshot never overwrites it
        self.writes = 0
        self.last_write = 0.0  # unix time of the last write (0: none by this process)
        self.detection: bytes | None = None  # the detection state `load` found (None: none saved)

    def load(self) -> list[FileRecord] | None:
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
        try:
            self.detection = base64.b64decode(doc.detection, validate=True) if doc.detection else None
        except ValueError as exc:
            raise StateError(f"{self.path}: the detection state is not base64 ({exc}); move the file away to start over") from exc
        return doc.files

    def save(self, entries: list[FileRecord], generation: int = 0, detection: bytes | None = None) -> bool:
        """Write the entries (and the detection state taken with them) if they changed; True if a write happened.
        `generation` orders snapshots taken on the event loop: a write of an older snapshot that lost the race
        is skipped."""
        body = self._encoder.encode(sorted(entries, key=lambda e: (e.path, e.dev, e.ino)))
        if detection is not None:
            body += b',"detection":"%s"' % base64.b64encode(detection)
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

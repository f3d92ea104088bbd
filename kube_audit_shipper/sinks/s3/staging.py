"""Objects being filled on local disk, under `<state_dir>/s3/<sink>/`, until they are uploaded.

Per object, `<n:012d>.meta.json` (version 1: key, seq, first event time, partition, compression; once sealed
also `sealed` and the final `size`) is written atomically first (and again when sealed), then `<n:012d>.data`
receives one compressed frame (zstd with content checksum) or gzip member per batch, fsynced before the batch
is acknowledged; the data file's bytes are the object's bytes.
`seq` holds the next object number, saved before an object is started, so a number (and so a key) is never
reused. An object is *sealed* when it reaches object_max_bytes or object_max_age_s, when its time partition
changes, or at stop; sealed objects are uploaded oldest first and their files removed only after the upload
succeeded. At start every object found is sealed for upload; the one that was being filled is scanned
(durable.valid_prefix) and its torn tail (a frame cut by a crash) cut at the last whole frame: every frame
before it was acknowledged and may be covered by a checkpoint.

Thread-safe: appends and seals run in worker threads; the upload task reads the lists from the event
loop, under a lock never held across a write or an fsync.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from kube_audit_shipper.durable import append_all, cut_back, fsync_dir, valid_prefix, write_atomic
from kube_audit_shipper.sinks.s3.keys import KeyTemplate, format_seq

log = logging.getLogger(__name__)

META_VERSION = 1


class StagingFullError(Exception):
    """No room for this batch in the staging directory until an upload frees some."""


@dataclass(slots=True)
class StagedObject:
    number: int
    seq: str
    key: str
    first_time: datetime
    partition: str
    values: dict[str, str]  # the event-field placeholder values the key was rendered with
    data: Path
    meta: Path
    size: int = 0
    opened: float = 0.0  # time.monotonic() of the first append (recovered: of the start)
    recovered: bool = False
    sealed: bool = False  # complete: its meta records the final size


class Staging:
    def __init__(
        self,
        directory: Path,
        *,
        codec: Literal["zstd", "gzip"],
        keys: KeyTemplate,
        max_bytes: int,
        object_max_bytes: int,
        object_max_age_s: float,
    ) -> None:
        self.dir = directory
        self.codec = codec
        self.keys = keys
        self.max_bytes = max_bytes
        self.object_max_bytes = object_max_bytes
        self.object_max_age_s = object_max_age_s
        self._io = threading.Lock()  # the object being filled: its fd, appends, sealing, the counter file
        self._state = threading.Lock()  # short: lists and byte counts, read from the event loop too
        self._current: StagedObject | None = None
        self._fd: int | None = None
        self._sealed: list[StagedObject] = []
        self.used_bytes = 0
        self.recovered_objects = 0
        self.cut_bytes = 0
        self.objects_started = 0
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._counter_path = self.dir / "seq"
        self._next = self._load_counter()
        self._recover()

    # -- start -----------------------------------------------------------------------------------
    def _load_counter(self) -> int:
        try:
            return max(1, int(self._counter_path.read_text().strip() or "1"))
        except FileNotFoundError:
            return 1
        except ValueError:
            log.error("unreadable staging counter; continuing past every staged object", extra={"file": str(self._counter_path)})
            return 1

    def _recover(self) -> None:
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink()
        for meta_path in sorted(self.dir.glob("*.meta.json")):
            data_path = meta_path.with_name(meta_path.name.removesuffix(".meta.json") + ".data")
            try:
                meta = json.loads(meta_path.read_bytes())
                obj = StagedObject(
                    number=int(meta_path.name.split(".", 1)[0]),
                    seq=meta["seq"],
                    key=meta["key"],
                    first_time=datetime.fromisoformat(meta["first_time"]),
                    partition=meta["partition"],
                    values=dict(meta.get("values") or {}),
                    data=data_path,
                    meta=meta_path,
                    opened=time.monotonic(),
                    recovered=True,
                )
                if meta.get("compression", self.codec) != self.codec:
                    raise ValueError(f"staged with {meta.get('compression')}, the sink now uses {self.codec}")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("cannot read a staged object's metadata; left in place", extra={"file": str(meta_path), "error": str(exc)})
                continue
            self._next = max(self._next, obj.number + 1)
            if not data_path.exists():
                meta_path.unlink()
                continue
            size = data_path.stat().st_size
            obj.sealed = bool(meta.get("sealed")) and meta.get("size") == size
            keep = size if obj.sealed else valid_prefix(data_path, self.codec)  # only an object being filled can be torn
            if keep < size:
                cut_back(data_path, keep)
                self.cut_bytes += size - keep
                log.warning("cut a torn tail from a staged object", extra={"file": str(data_path), "kept_bytes": keep, "cut_bytes": size - keep})
            if keep == 0:
                data_path.unlink()
                meta_path.unlink()
                continue
            obj.size = keep
            if not obj.sealed:
                obj.sealed = True
                self._write_meta(obj)
            self.used_bytes += keep
            self._sealed.append(obj)
            self.recovered_objects += 1
        for data_path in self.dir.glob("*.data"):
            if not data_path.with_name(data_path.name.removesuffix(".data") + ".meta.json").exists():
                log.error("staged data without metadata; left in place", extra={"file": str(data_path)})
        fsync_dir(self.dir)
        if self._sealed:
            log.info("staged objects from a previous run: uploading them first", extra={"objects": len(self._sealed), "bytes": self.used_bytes})

    # -- filling ---------------------------------------------------------------------------------
    def append(self, payload: bytes, *, first_time: datetime, partition: str, values: Mapping[str, str]) -> None:
        """Append one batch's frame to the current object (starting one if needed) and fsync it."""
        with self._io:
            cur = self._current
            if cur is not None and (
                cur.size >= self.object_max_bytes
                or time.monotonic() - cur.opened >= self.object_max_age_s
                or (partition != cur.partition and first_time > cur.first_time)
            ):
                self._seal_io()
            with self._state:
                if self.used_bytes and self.used_bytes + len(payload) > self.max_bytes:
                    raise StagingFullError(f"{self.used_bytes} of {self.max_bytes} bytes staged")
                self.used_bytes += len(payload)  # reserved now, given back if the write fails
            try:
                cur = self._current or self._open_io(first_time, partition, values)
                assert self._fd is not None
                append_all(self._fd, payload, sync=True)  # a partial frame is taken back out: the retry appends to a clean end
            except BaseException:
                with self._state:
                    self.used_bytes -= len(payload)
                raise
            cur.size += len(payload)
            if cur.size >= self.object_max_bytes:
                self._seal_io()

    def _open_io(self, first_time: datetime, partition: str, values: Mapping[str, str]) -> StagedObject:
        number = self._take_number()
        seq = format_seq(number, secrets.randbits(32))
        obj = StagedObject(
            number=number,
            seq=seq,
            key=self.keys.render(first_time, seq, values),
            first_time=first_time,
            partition=partition,
            values=dict(values),
            data=self.dir / f"{number:012d}.data",
            meta=self.dir / f"{number:012d}.meta.json",
            opened=time.monotonic(),
        )
        self._write_meta(obj)
        self._fd = os.open(obj.data, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fsync_dir(self.dir)
        with self._state:
            self._current = obj
        self.objects_started += 1
        return obj

    def _take_number(self) -> int:
        """The next object number, saved as used before anything is named after it."""
        number = self._next
        self._next += 1
        write_atomic(self._counter_path, f"{self._next}\n".encode())
        return number

    def _write_meta(self, obj: StagedObject) -> None:
        meta = {
            "v": META_VERSION,
            "key": obj.key,
            "seq": obj.seq,
            "first_time": obj.first_time.isoformat(),
            "partition": obj.partition,
            "values": obj.values,
            "compression": self.codec,
        }
        if obj.sealed:
            meta.update(sealed=True, size=obj.size)
        write_atomic(obj.meta, json.dumps(meta, separators=(",", ":")).encode())

    def _seal_io(self) -> bool:
        cur = self._current
        if cur is None:
            return False
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        if cur.size == 0:  # started, but its only write failed: nothing to upload
            cur.data.unlink(missing_ok=True)
            cur.meta.unlink(missing_ok=True)
        else:  # its data was fsynced batch by batch: a restart need not scan it again
            cur.sealed = True
            self._write_meta(cur)
        with self._state:
            self._current = None
            if cur.size:
                self._sealed.append(cur)
        return cur.size > 0

    # -- for the uploader ------------------------------------------------------------------------
    def seal(self) -> bool:
        """Seal the object being filled, if any (at stop)."""
        with self._io:
            return self._seal_io()

    def seal_if_old(self) -> bool:
        with self._io:
            cur = self._current
            return cur is not None and time.monotonic() - cur.opened >= self.object_max_age_s and self._seal_io()

    def seconds_to_seal(self) -> float | None:
        """Seconds until the object being filled reaches object_max_age_s; None when none is."""
        with self._state:
            cur = self._current
        return None if cur is None else max(0.0, cur.opened + self.object_max_age_s - time.monotonic())

    def next_sealed(self) -> StagedObject | None:
        with self._state:
            return self._sealed[0] if self._sealed else None

    def staged_keys(self) -> set[str]:
        with self._state:
            return {o.key for o in self._sealed} | ({self._current.key} if self._current else set())

    def remove(self, obj: StagedObject) -> None:
        """The object is stored in the bucket: drop its files (only the uploader touches a sealed object)."""
        obj.data.unlink(missing_ok=True)
        obj.meta.unlink(missing_ok=True)
        fsync_dir(self.dir)
        with self._state:
            self._sealed.remove(obj)
            self.used_bytes -= obj.size

    def rekey(self, obj: StagedObject) -> None:
        """Give a sealed object a new number and key (its key is taken by another object in the bucket)."""
        with self._io:
            obj.seq = format_seq(self._take_number(), secrets.randbits(32))
            obj.key = self.keys.render(obj.first_time, obj.seq, obj.values)
            self._write_meta(obj)

    @property
    def objects(self) -> int:
        with self._state:
            return len(self._sealed) + (self._current is not None)

    @property
    def sealed_count(self) -> int:
        with self._state:
            return len(self._sealed)

    def close(self) -> None:
        with self._io:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

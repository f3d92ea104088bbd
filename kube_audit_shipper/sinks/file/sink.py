"""`type: file`: NDJSON files, zstd-compressed, rotated by size and age, renamed into place when done.

Each batch is one zstd frame (with content checksum) appended to `.<name>.tmp` and fsynced before
the batch is acknowledged; concatenated frames are one valid zstd stream, so a finished file
decompresses with the standard `zstd -d`. A file is finished by renaming it to `<name>` (names sort by
time: `<prefix>-<UTC yyyymmddThhmmss.ffffff>Z-<seq>.ndjson.zst`) and fsyncing the directory, when it
reaches rotate_bytes, when it is rotate_age_s old (`tick`), or at stop.

After a crash, a temp file holds every acknowledged batch followed, perhaps, by a torn frame (or, with
`compression: none`, a torn line). On start the valid prefix is kept (durable.valid_prefix: each frame must
decompress, pass its checksum and end in a newline), the rest cut, and the file finished. Nothing before the
cut is thrown away: the checkpoint may already be past it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import zstandard

from kube_audit_shipper.delivery.context import SinkContext
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Reply, Request, Retry, Sink
from kube_audit_shipper.durable import append_all, cut_back, fsync_dir, valid_prefix
from kube_audit_shipper.sinks.file.config import FileSinkConfig

log = logging.getLogger(__name__)


class FileSink(Sink):
    max_concurrency = 1  # one file, appended in batch order

    def __init__(self, cfg: FileSinkConfig, ctx: SinkContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.dir = Path(cfg.path)
        self.compressed = cfg.compression == "zstd"
        self.suffix = ".ndjson.zst" if self.compressed else ".ndjson"
        self._cctx = zstandard.ZstdCompressor(level=cfg.compression_level, write_checksum=True) if self.compressed else None
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._tmp: Path | None = None
        self._size = 0
        self._opened = 0.0
        self._seq = 0
        self.files_finished = 0
        self.recovered_bytes = 0
        self.cut_bytes = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        self._recover()

    # -- crash recovery --------------------------------------------------------------------------
    def _recover(self) -> None:
        for tmp in sorted(self.dir.glob(f".{self.cfg.file_prefix}-*{self.suffix}.tmp")):
            keep = valid_prefix(tmp, "zstd" if self.compressed else "none")
            size = tmp.stat().st_size
            if keep < size:
                cut_back(tmp, keep)
                self.cut_bytes += size - keep
                log.warning(
                    "cut a torn tail from an unfinished output file", extra={"sink": self.name, "file": str(tmp), "kept_bytes": keep, "cut_bytes": size - keep}
                )
            if keep == 0:
                tmp.unlink()
            else:
                os.replace(tmp, self._final_name(tmp))
                self.recovered_bytes += keep
                log.info("finished an output file left by a previous run", extra={"sink": self.name, "file": str(self._final_name(tmp))})
        fsync_dir(self.dir)

    @staticmethod
    def _final_name(tmp: Path) -> Path:
        return tmp.with_name(tmp.name[1:].removesuffix(".tmp"))

    # -- writing ---------------------------------------------------------------------------------
    def encode(self, records: list[bytes]) -> list[Request]:
        data = b"\n".join(records) + b"\n"
        payload = self._cctx.compress(data) if self._cctx is not None else data
        return [Request(payload=payload, indices=range(len(records)), raw_bytes=len(data))]

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        return []  # a local file has no request size limit

    async def send(self, request: Request) -> Reply:
        await asyncio.to_thread(self._append, request.payload)
        return Reply(200, {}, b"")

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        if isinstance(result, Reply):
            return Delivered()
        if isinstance(result, OSError):
            where = f"{self.dir}: {result.strerror or result}"
            if result.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EINTR):
                return Retry(f"write failed ({errno.errorcode.get(result.errno or 0, '?')}): {where}")
            return Blocked(f"cannot write ({errno.errorcode.get(result.errno or 0, '?')}): {where}")
        return Retry(f"{type(result).__name__}: {result}")

    def _open(self) -> None:
        now = datetime.now(UTC)
        self._seq += 1
        stamp = now.strftime("%Y%m%dT%H%M%S.%f")
        name = f".{self.cfg.file_prefix}-{stamp}Z-{self._seq:04d}{self.suffix}.tmp"
        self._tmp = self.dir / name
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        self._size = 0
        self._opened = time.monotonic()
        fsync_dir(self.dir)

    def _finish(self) -> None:
        if self._fd is None:
            return
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        assert self._tmp is not None
        os.replace(self._tmp, self._final_name(self._tmp))
        fsync_dir(self.dir)
        self.files_finished += 1

    def _append(self, payload: bytes) -> None:
        with self._lock:
            if self._fd is not None and (self._size >= self.cfg.rotate_bytes or time.monotonic() - self._opened >= self.cfg.rotate_age_s):
                self._finish()
            if self._fd is None:
                self._open()
            assert self._fd is not None
            append_all(self._fd, payload, sync=True)  # e.g. ENOSPC: the partial frame is taken back out, the retry appends to a clean end
            self._size += len(payload)

    def finish_if_old(self, now: float) -> None:
        """Finish the current file once it is older than rotate_age_s (`now`: time.monotonic())."""
        with self._lock:
            if self._fd is not None and now - self._opened >= self.cfg.rotate_age_s:
                self._finish()

    async def tick(self, now: float) -> None:
        try:
            await asyncio.to_thread(self.finish_if_old, now)
        except OSError as exc:  # the file stays open; the next tick or append finishes it
            log.warning("cannot finish an output file yet", extra={"sink": self.name, "file": str(self._tmp), "error": str(exc)})

    async def aclose(self, deadline: float | None = None) -> None:
        def _close() -> None:
            with self._lock:
                self._finish()

        await asyncio.to_thread(_close)

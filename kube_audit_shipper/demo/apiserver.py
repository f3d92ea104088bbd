"""An audit log writer that rotates, names, compresses and prunes files the way kube-apiserver does.

kube-apiserver writes ``--audit-log-path`` through ``gopkg.in/natefinch/lumberjack.v2`` (``--audit-log-maxsize``,
``--audit-log-maxbackup``, ``--audit-log-compress``). `RotatingAuditWriter` reproduces what a tailer sees:

* one ``write`` per event line (line + ``\\n``); a line is never split across files;
* before a write that would take the file past ``max_bytes``, the file is closed and renamed to
  ``<name>-<UTC 2006-01-02T15-04-05.000><ext>`` (``audit.log`` -> ``audit-2026-11-22T10-00-00.000.log``,
  ``kubernetes.audit`` -> ``kubernetes-2026-11-22T10-00-00.000.audit``) and a new file is created at the path
  (mode 0600, or the mode of the file it replaces); on the first write an existing file is appended to, or
  rotated first if ``size + len(line) >= max_bytes`` (lumberjack's ``openExistingOrNew``);
* a line longer than ``max_bytes`` is refused (`OversizeLineError`), as lumberjack refuses it (the apiserver
  then drops the event);
* after a rotation the "mill" runs: backups beyond ``max_backups`` are deleted, oldest (by the timestamp in the
  name) first, counting ``x`` and ``x.gz`` once; then with ``compress`` every uncompressed backup is gzipped
  straight to ``<backup>.gz`` (a partial ``.gz`` is visible while this runs) and the backup is removed.
  lumberjack mills in a goroutine; ``compress_async=True`` does it in a background thread, and `flush`/`close`
  wait for it.

Unlike lumberjack, which uses the current time as is and could overwrite a backup, a backup timestamp that
would collide with (or sort before) an existing backup is advanced by 1 ms, so names stay unique and sortable.

``python -m kube_audit_shipper.demo.apiserver --path P --events N --rate R --max-bytes B [--compress] [--seed S]`` runs a
rate-limited "apiserver" writing generated events; it prints only a final JSON summary line and, on SIGTERM or
SIGINT, finishes the current line and exits cleanly.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import re
import shutil
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType, TracebackType

from kube_audit_shipper.demo.events import AuditEventGenerator, EventMix

__all__ = ["OversizeLineError", "RotatingAuditWriter", "backup_name", "compress_file", "list_backups", "main", "write_events"]

_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}")
_MS = timedelta(milliseconds=1)


class OversizeLineError(ValueError):
    """A line (with its newline) is longer than ``max_bytes``: lumberjack refuses such a write."""


def _split(path: Path) -> tuple[str, str]:
    """(prefix, ext) of a file name as Go's ``filepath.Ext`` splits it: ext starts at the last dot."""
    name = path.name
    dot = name.rfind(".")
    return (name[:dot], name[dot:]) if dot >= 0 else (name, "")


def backup_name(path: str | os.PathLike[str], when: datetime) -> Path:
    """The backup path for ``path`` rotated at ``when`` (UTC, millisecond precision)."""
    path = Path(path)
    prefix, ext = _split(path)
    utc = when.astimezone(UTC) if when.tzinfo else when
    return path.with_name(f"{prefix}-{utc:%Y-%m-%dT%H-%M-%S}.{utc.microsecond // 1000:03d}{ext}")


def _stamp_of(path: Path, candidate: str) -> datetime | None:
    """The rotation time in a backup name of ``path`` (``.gz`` or not), or None if ``candidate`` is not one."""
    prefix, ext = _split(path)
    if not candidate.startswith(prefix + "-"):
        return None
    rest = candidate[len(prefix) + 1 :]
    for suffix in (ext + ".gz", ext):
        stamp = rest[: len(rest) - len(suffix)] if suffix and rest.endswith(suffix) else None if suffix else rest
        if stamp is not None and _STAMP.fullmatch(stamp):
            return datetime.strptime(stamp, "%Y-%m-%dT%H-%M-%S.%f").replace(tzinfo=UTC)
    return None


def list_backups(path: str | os.PathLike[str]) -> list[Path]:
    """Backups of ``path`` (``.gz`` or not), oldest first by the timestamp in their names, as lumberjack finds them."""
    path = Path(path)
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    found = [(ts, name) for name in names if (ts := _stamp_of(path, name)) is not None]
    return [path.parent / name for _, name in sorted(found)]


def compress_file(src: str | os.PathLike[str]) -> Path:
    """gzip ``src`` to ``src.gz`` (written under its final name, same mode), then remove ``src``: lumberjack's way.

    A ``.gz`` left by an earlier, interrupted attempt is overwritten; on error the partial ``.gz`` is removed.
    """
    src = Path(src)
    dst = src.with_name(src.name + ".gz")
    with open(src, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        fd = os.open(dst, os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_CLOEXEC, mode)
        try:
            with open(fd, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
                shutil.copyfileobj(f, gz, 1 << 20)
        except BaseException:
            dst.unlink(missing_ok=True)
            raise
    src.unlink()
    return dst


class RotatingAuditWriter:
    """Append audit lines to ``path``, rotating like kube-apiserver's lumberjack logger (see the module docstring).

    ``clock`` gives the rotation time (default: the real UTC time). ``fsync=True`` syncs every line and, on
    rotation, the directory. Safe to call from several threads; also a context manager.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int,
        max_backups: int = 0,
        compress: bool = False,
        compress_async: bool = False,
        fsync: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if max_backups < 0:
            raise ValueError("max_backups must be >= 0")
        self.path = Path(path)
        self.max_bytes, self.max_backups, self.compress, self.fsync = max_bytes, max_backups, compress, fsync
        self.rotations = 0
        self._clock = clock if clock is not None else (lambda: datetime.now(UTC))
        self._fd: int | None = None
        self._size = 0
        self._last_stamp: datetime | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._mill_cv = threading.Condition()
        self._mill_wanted = self._mill_busy = self._mill_stop = False
        self._mill_error: BaseException | None = None
        self._mill_thread: threading.Thread | None = None
        if compress_async:
            self._mill_thread = threading.Thread(target=self._mill_loop, name=f"audit-mill:{self.path.name}", daemon=True)
            self._mill_thread.start()

    @property
    def size(self) -> int:
        """Bytes in the current file (as far as this writer knows)."""
        return self._size

    def write(self, line: bytes) -> None:
        """Append ``line`` and a newline in one write, rotating first if the file would exceed ``max_bytes``."""
        if b"\n" in line:
            raise ValueError("an audit line must not contain a newline")
        data = line + b"\n"
        if len(data) > self.max_bytes:
            raise OversizeLineError(f"write length {len(data)} exceeds maximum file size {self.max_bytes}")
        with self._lock:
            if self._closed:
                raise ValueError("write to a closed RotatingAuditWriter")
            if self._fd is None:
                self._open_existing_or_new(len(data))
            elif self._size + len(data) > self.max_bytes:
                self._rotate()
            assert self._fd is not None
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            if self.fsync:
                os.fsync(self._fd)
            self._size += len(data)

    def rotate(self) -> Path | None:
        """Rotate now (even an empty file, as lumberjack's ``Rotate``); returns the backup path, or None if no file."""
        with self._lock:
            if self._closed:
                raise ValueError("rotate on a closed RotatingAuditWriter")
            return self._rotate()

    def flush(self) -> None:
        """Wait until background pruning/compression is done; re-raise an error it hit."""
        with self._mill_cv:
            while self._mill_wanted or self._mill_busy:
                self._mill_cv.wait()
            error, self._mill_error = self._mill_error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Close the file, wait for pending compression, stop the background thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_file()
        try:
            self.flush()
        finally:
            if self._mill_thread is not None:
                with self._mill_cv:
                    self._mill_stop = True
                    self._mill_cv.notify_all()
                self._mill_thread.join()

    def __enter__(self) -> RotatingAuditWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ---- internals (called with self._lock held) -----------------------------------------------------------------
    def _open_existing_or_new(self, write_len: int) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._open_new()
            return
        if st.st_size + write_len >= self.max_bytes:
            self._rotate()
            return
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._size = st.st_size

    def _rotate(self) -> Path | None:
        self._close_file()
        backup = self._open_new()
        if backup is not None:
            self.rotations += 1
            self._mill()
        return backup

    def _open_new(self) -> Path | None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        mode, backup = 0o600, None
        try:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
        except FileNotFoundError:
            pass
        else:
            backup = self._backup_path()
            os.rename(self.path, backup)
        self._fd = os.open(self.path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, mode)
        os.fchmod(self._fd, mode)
        self._size = 0
        if self.fsync:
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return backup

    def _backup_path(self) -> Path:
        """Now (from the clock), advanced by 1 ms steps past any existing backup, so names stay unique and sorted."""
        now = self._clock()
        now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
        stamp = now.replace(microsecond=now.microsecond // 1000 * 1000)
        existing = list_backups(self.path)
        floor = [s + _MS for s in (self._last_stamp, _stamp_of(self.path, existing[-1].name) if existing else None) if s is not None]
        stamp = max([stamp, *floor])
        while backup_name(self.path, stamp).exists() or Path(f"{backup_name(self.path, stamp)}.gz").exists():
            stamp += _MS
        self._last_stamp = stamp
        return backup_name(self.path, stamp)

    def _close_file(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)

    # ---- the mill: prune, then compress --------------------------------------------------------------------------
    def _mill(self) -> None:
        if self.max_backups == 0 and not self.compress:
            return
        if self._mill_thread is None:
            self._mill_once()
            return
        with self._mill_cv:  # like lumberjack's 1-slot channel: requests made while one is pending coalesce
            self._mill_wanted = True
            self._mill_cv.notify_all()

    def _mill_once(self) -> None:
        backups = list_backups(self.path)[::-1]  # newest first
        remove: list[Path] = []
        if 0 < self.max_backups < len(backups):
            preserved: set[str] = set()
            remaining: list[Path] = []
            for b in backups:
                preserved.add(b.name.removesuffix(".gz"))
                (remove if len(preserved) > self.max_backups else remaining).append(b)
            backups = remaining
        for b in remove:
            b.unlink(missing_ok=True)
        if self.compress:
            for b in backups:
                if not b.name.endswith(".gz") and b.exists():
                    compress_file(b)

    def _mill_loop(self) -> None:
        while True:
            with self._mill_cv:
                while not self._mill_wanted and not self._mill_stop:
                    self._mill_cv.wait()
                if not self._mill_wanted:
                    return
                self._mill_wanted, self._mill_busy = False, True
            try:
                self._mill_once()
            except Exception as exc:  # noqa: BLE001  # kept for flush()/close(); lumberjack would only log it
                with self._mill_cv:
                    self._mill_error = exc
            finally:
                with self._mill_cv:
                    self._mill_busy = False
                    self._mill_cv.notify_all()


def write_events(
    path: str | os.PathLike[str],
    n: int,
    *,
    seed: int = 0,
    max_bytes: int,
    max_backups: int = 0,
    compress: bool = False,
    compress_async: bool = False,
    clock: Callable[[], datetime] | None = None,
    mix: EventMix | None = None,
    start_time: datetime | None = None,
) -> list[str]:
    """Write ``n`` generated events through a `RotatingAuditWriter`; the auditIDs written, in order.

    An event longer than ``max_bytes`` is dropped (and left out of the result), as the apiserver drops it.
    """
    gen = AuditEventGenerator(seed, start_time=start_time, mix=mix)
    written = []
    with RotatingAuditWriter(path, max_bytes=max_bytes, max_backups=max_backups, compress=compress, compress_async=compress_async, clock=clock) as writer:
        for audit_id, line in gen.records(n):
            try:
                writer.write(line)
            except OversizeLineError:
                continue
            written.append(audit_id)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Run a rate-limited fake apiserver writing audit events; print ``{"events", "rotations", "dropped"}`` once."""
    ap = argparse.ArgumentParser(prog="python -m kube_audit_shipper.demo.apiserver", description=main.__doc__)
    ap.add_argument("--path", required=True, help="the audit log path (--audit-log-path)")
    ap.add_argument("--events", type=int, required=True, help="events to write (0: until SIGTERM)")
    ap.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    ap.add_argument("--max-bytes", type=int, required=True, help="rotate before the file would exceed this")
    ap.add_argument("--max-backups", type=int, default=0, help="backups to keep (0: all)")
    ap.add_argument("--compress", action="store_true", help="gzip backups in the background, as lumberjack does")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start-time", default=None, help="first event time, ISO 8601 or 'now' (default: fixed)")
    ap.add_argument("--fsync", action="store_true", help="fsync every line")
    args = ap.parse_args(argv)
    start = None
    if args.start_time == "now":
        start = datetime.now(UTC)
    elif args.start_time:
        start = datetime.fromisoformat(args.start_time.replace("Z", "+00:00"))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:  # only a flag: the current write completes
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    written = dropped = 0
    try:
        gen = AuditEventGenerator(args.seed, start_time=start)
        with RotatingAuditWriter(
            args.path, max_bytes=args.max_bytes, max_backups=args.max_backups, compress=args.compress, compress_async=True, fsync=args.fsync
        ) as writer:
            t0 = time.monotonic()
            for i in itertools.count() if args.events == 0 else range(args.events):
                if args.rate > 0:
                    due = t0 + i / args.rate
                    while not stop.is_set() and (delay := due - time.monotonic()) > 0:
                        time.sleep(min(delay, 0.05))
                if stop.is_set():
                    break
                try:
                    writer.write(gen.line())
                    written += 1
                except OversizeLineError:
                    dropped += 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(json.dumps({"events": written, "rotations": writer.rotations, "dropped": dropped}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

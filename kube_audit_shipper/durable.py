"""Durable files: the few ways the agent writes to disk so that a crash or a full disk never corrupts state.

- `write_atomic`: replace a file so that a crash leaves the old or the new content (temp file, fsync,
  rename over, fsync of the directory);
- `append_all`: append a whole record or nothing (and, with `sync`, make it durable): on a failed or
  short write or fsync (a full disk) the file is cut back to where the record started, so a retry
  appends to a clean end and no torn record sits between two good ones;
- `pwrite_all`: write at an explicit offset (a cut-back after a failed write leaves no hole);
- `valid_prefix` / `cut_back`: after a crash, how much of a file of appended zstd frames, gzip members
  or lines is whole, and cutting the torn rest off durably;
- `fsync_dir`: make a directory entry (a created, renamed or deleted file) durable;
- `ensure_dir`: create a directory with an explicit mode (not the umask's) and make its entry durable;
- `lock_exclusive`: hold an flock on a lock file for as long as the descriptor stays open.

Every function raises OSError as the system call did; callers decide what a failure means (retry with
backoff, block, or refuse to start), and report it with the path and errno.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import zlib
from pathlib import Path
from typing import Literal

import zstandard

Codec = Literal["zstd", "gzip", "none"]  # what a file of appended records holds: zstd frames, gzip members, or lines
_SCAN_CHUNK_BYTES = 1 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path, mode: int) -> None:
    """Create `path` (and missing parents, with the same mode) if it does not exist. A directory this
    call creates gets exactly `mode`, whatever the umask; an existing one is left as it is."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode)
        except FileExistsError:
            continue
        os.chmod(d, mode)
        fsync_dir(d.parent)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new content."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def append_all(fd: int, data: bytes, *, sync: bool = False) -> None:
    """Append `data` to a file opened with O_APPEND, whole or not at all (with `sync`: and fsync it): when a
    write or the fsync fails (ENOSPC, EIO) the file is cut back to its size before this call, then the
    error is raised."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        write_all(fd, data)
        if sync:
            os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):  # the original error says more; a reader of this file skips a torn tail
            os.ftruncate(fd, start)
        raise


def pwrite_all(fd: int, parts: list[bytes], offset: int) -> None:
    """Write `parts` back to back at `offset` (explicit offsets: a cut-back after a failed write leaves no hole)."""
    views = [memoryview(p) for p in parts if p]
    while views:
        n = os.pwritev(fd, views, offset)
        offset += n
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if views:
            views[0] = views[0][n:]


def cut_back(path: Path, size: int) -> None:
    """Truncate `path` to `size` bytes, durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def valid_prefix(path: Path, codec: Codec) -> int:
    """Length of the longest prefix of `path` made of whole records, each ending in a newline: zstd frames
    (content checksums checked), gzip members, or (`none`) lines. What follows is a torn tail: an append a
    crash cut short."""
    size = path.stat().st_size
    if size == 0:
        return 0
    if codec == "none":
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return mm.rfind(b"\n") + 1
    pos = 0
    with path.open("rb") as fh:
        while pos < size:
            dec = zstandard.ZstdDecompressor().decompressobj() if codec == "zstd" else zlib.decompressobj(wbits=31)
            fh.seek(pos)
            fed = 0
            last = b""
            try:
                while not dec.eof:
                    chunk = fh.read(_SCAN_CHUNK_BYTES)
                    if not chunk:
                        break
                    fed += len(chunk)
                    out = dec.decompress(chunk)
                    if out:
                        last = out[-1:]
            except (zstandard.ZstdError, zlib.error):
                break
            if not dec.eof or last != b"\n":
                break
            pos += fed - len(dec.unused_data)
    return pos


def lock_exclusive(path: Path, mode: int = 0o600) -> int:
    """Open (creating) `path` and take an exclusive flock on it; the lock lives as long as the returned
    descriptor. Raises BlockingIOError when another open descriptor holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd

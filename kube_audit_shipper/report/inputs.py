"""Reading the logs a report is made of: plain, gzip, or the file sink's zstd NDJSON, one line at a time.

The format is told by the first bytes, not the name: gzip (`1f 8b`, kube-apiserver's `--audit-log-compress`
backups), zstd (`28 b5 2f fd`, the file sink's `*.ndjson.zst`: one frame per batch, concatenated, read across
frames), anything else plain text. Lines are cut from 1 MiB reads, so memory does not depend on the file; a
line longer than `max_line_bytes` is skipped to its newline and counted (its bytes are never held), never
fatal. A file that ends in a torn gzip member or zstd frame (a sink's `.tmp` after a crash) gives every whole
line before the tear and then raises `LogReadError`, so the caller can report it and go on with the next file.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

import zstandard

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
READ_BYTES = 1 << 20
MAX_LINE_BYTES = 16 << 20


class LogReadError(Exception):
    """A log could not be read to its end (missing, unreadable, torn compressed data)."""


class LogFile:
    """One log: its lines, and how far into the file (compressed bytes) reading has got, for progress."""

    def __init__(self, path: str, *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.size_bytes = 0
        self.oversize_lines = 0
        self.format = "plain"
        self._raw: BinaryIO | None = None

    @property
    def position_bytes(self) -> int:
        """Bytes of the file consumed so far (of the compressed file for gzip and zstd)."""
        raw = self._raw
        if raw is None:
            return 0
        if raw.closed:
            return self.size_bytes
        try:
            return raw.tell()
        except (OSError, ValueError):
            return 0

    def lines(self, on_oversize: Callable[[], None] | None = None) -> Iterator[bytes]:
        """The non-blank lines of the file, without line endings. Raises `LogReadError` (after the lines read)."""
        try:
            raw = open(self.path, "rb")  # noqa: SIM115 - closed in the finally below, after the generator ends
        except OSError as exc:
            raise LogReadError(f"{self.path}: {exc.strerror or exc}") from exc
        self._raw = raw
        try:
            self.size_bytes = os.fstat(raw.fileno()).st_size
            magic = raw.read(4)
            raw.seek(0)
            stream: BinaryIO | gzip.GzipFile | zstandard.ZstdDecompressionReader
            if magic.startswith(GZIP_MAGIC):
                self.format = "gzip"
                stream = gzip.GzipFile(fileobj=raw, mode="rb")
            elif magic == ZSTD_MAGIC:
                self.format = "zstd"
                whole = whole_frames_bytes(raw, self.size_bytes)
                stream = zstandard.ZstdDecompressor().stream_reader(cast(BinaryIO, _Prefix(raw, whole)), read_across_frames=True, closefd=False)
                yield from self._split(stream, on_oversize)
                if whole < self.size_bytes:
                    raise LogReadError(f"{self.path}: zstd data unreadable after {whole} bytes: a torn frame ({self.size_bytes - whole} bytes) is left out")
                return
            else:
                stream = raw
            yield from self._split(stream, on_oversize)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            raise LogReadError(f"{self.path}: {self.format} data unreadable after {self.position_bytes} bytes: {exc}") from exc
        finally:
            raw.close()

    def _split(self, stream: BinaryIO | gzip.GzipFile | zstandard.ZstdDecompressionReader, on_oversize: Callable[[], None] | None) -> Iterator[bytes]:
        limit = self.max_line_bytes
        pending = b""
        skipping = False  # inside an oversize line: drop bytes up to its newline
        read = stream.read
        while True:
            chunk = read(READ_BYTES)
            if not chunk:
                break
            if skipping:
                cut = chunk.find(b"\n")
                if cut < 0:
                    continue
                chunk = chunk[cut + 1 :]
                skipping = False
            parts = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
            pending = parts.pop()
            for line in parts:
                if len(line) > limit:
                    self._oversize(on_oversize)
                    continue
                if line.endswith(b"\r"):
                    line = line[:-1]
                if line and not line.isspace():
                    yield line
            if len(pending) > limit:
                pending = b""
                skipping = True
                self._oversize(on_oversize)
        if pending and not skipping and not pending.isspace():
            yield pending.removesuffix(b"\r")

    def _oversize(self, on_oversize: Callable[[], None] | None) -> None:
        self.oversize_lines += 1
        if on_oversize is not None:
            on_oversize()


class _Prefix:
    """The first `limit` bytes of a file, as a readable stream (the whole zstd frames of a torn file)."""

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        self._raw = raw
        self._left = limit

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        data = self._raw.read(self._left if n < 0 else min(n, self._left))
        self._left -= len(data)
        return data


def whole_frames_bytes(raw: BinaryIO, size_bytes: int) -> int:
    """Length of the prefix of a zstd file made of whole frames, found by walking frame and block headers.

    zstd's stream reader ends quietly at a torn frame, so the frames are walked first (headers only: a few
    reads per 128 KiB block), and the file is then read up to the last whole frame. Skippable frames count.
    The stream position is restored.
    """
    start = raw.tell()
    pos = 0
    try:
        while pos < size_bytes:
            raw.seek(pos)
            head = raw.read(18)
            if len(head) < 8:
                return pos
            magic = int.from_bytes(head[:4], "little")
            if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame: 4-byte magic, 4-byte length, data
                end = pos + 8 + int.from_bytes(head[4:8], "little")
            elif head[:4] == ZSTD_MAGIC:
                try:
                    end = pos + zstandard.frame_header_size(head)
                except zstandard.ZstdError:
                    return pos
                checksum = bool(head[4] & 0x04)
                while True:
                    raw.seek(end)
                    block = raw.read(3)
                    if len(block) < 3:
                        return pos
                    header = int.from_bytes(block, "little")
                    kind, block_size = (header >> 1) & 3, header >> 3
                    if kind == 3:
                        return pos
                    end += 3 + (1 if kind == 1 else block_size)
                    if header & 1:
                        break
                end += 4 if checksum else 0
            else:
                return pos
            if end > size_bytes:
                return pos
            pos = end
        return pos
    finally:
        raw.seek(start)


def total_size_bytes(paths: list[str]) -> int:
    """Sum of the sizes of the files that exist (for a progress total)."""
    total = 0
    for path in paths:
        try:
            total += os.stat(path).st_size
        except OSError:
            continue
    return total

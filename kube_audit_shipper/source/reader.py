"""Read whole lines from one open file, plain or gzip, in large chunks. Blocking: runs in a thread.

Offsets are positions in the file's content (for gzip, in the decompressed stream). `consumed` is
the offset just past the last whole line handed out; a last line without its newline is held back
until the newline arrives. A line longer than `max_line_bytes` is never held whole: once the pending
bytes pass the limit the reader skips to the next newline and reports (offset, length) instead.
"""

from __future__ import annotations

import os
import zlib

from kube_audit_shipper.model import FP_BYTES, Lines

_GZ_READ = 256 * 1024


class CorruptInputError(Exception):
    """The file cannot be decoded further (e.g. a corrupt gzip stream)."""


class LineReader:
    def __init__(self, fd: int, *, offset: int, gz: bool, chunk_bytes: int, max_line_bytes: int) -> None:
        self.fd = fd
        self.gz = gz
        self.chunk_bytes = chunk_bytes
        self.max_line_bytes = max_line_bytes
        self._pending = bytearray()
        self._skipping = False
        self._comp_pos = 0
        self._dec = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if gz else None
        self._src = b""  # compressed bytes not yet fed
        self.gz_done = False  # gzip: the last member's trailer was read and no data follows
        # gzip cannot seek: it decompresses up to `offset` at the first read, in the reader's thread
        self._seek_to = offset if gz else 0
        self.consumed = self.read_pos = 0 if gz else offset  # read_pos: content offset of the next byte to read
        self.head = b""  # plain file read from offset 0: its first FP_BYTES bytes as this reader read them

    # -- raw content -----------------------------------------------------------------------------
    def _read_content(self, n: int) -> tuple[bytes, int, bool]:
        """Up to n content bytes at read_pos; returns (data, raw bytes read, gzip_incomplete)."""
        if not self.gz:
            data = os.pread(self.fd, n, self.read_pos)
            return data, len(data), False
        raw = 0
        dec = self._dec
        assert dec is not None
        while True:
            src = dec.unconsumed_tail or self._src
            self._src = b""
            if not src:
                src = os.pread(self.fd, _GZ_READ, self._comp_pos)
                self._comp_pos += len(src)
                raw += len(src)
                if not src:
                    return b"", raw, not dec.eof
            try:
                out = dec.decompress(src, n)
            except zlib.error as exc:
                raise CorruptInputError(f"corrupt gzip stream near compressed offset {self._comp_pos}: {exc}") from exc
            if dec.eof:
                rest = dec.unused_data
                self.gz_done = not rest
                if rest:  # another gzip member follows
                    self._dec = dec = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                    self._src = rest
            if out:
                return out, raw, False

    def _seek(self, offset: int) -> None:
        if not self.gz:
            self.consumed = self.read_pos = offset
            return
        while self.read_pos < offset:
            data, _, incomplete = self._read_content(min(self.chunk_bytes, offset - self.read_pos))
            if not data:
                raise CorruptInputError(
                    f"gzip content ends at {self.read_pos}, before the checkpoint offset {offset}" + (" (stream incomplete)" if incomplete else "")
                )
            self.read_pos += len(data)
        self.consumed = offset

    # -- lines -----------------------------------------------------------------------------------
    def read(self) -> Lines:
        """Read one chunk and return the whole lines in it (possibly none)."""
        if self._seek_to:
            self._seek(self._seek_to)
            self._seek_to = 0
        out = Lines(start=self.consumed, end=self.consumed)
        data, raw, incomplete = self._read_content(self.chunk_bytes)
        out.raw_bytes = raw
        if not data:
            out.eof = True
            out.gzip_incomplete = incomplete
            return out
        base = self.read_pos
        self.read_pos += len(data)
        if base < FP_BYTES and base == len(self.head) and not self.gz:
            self.head += data[: FP_BYTES - base]
        self._split(data, base, out)
        out.end = self.consumed
        out.eof = len(data) < self.chunk_bytes and not self.gz
        return out

    def _split(self, data: bytes, base: int, out: Lines) -> None:
        i = 0
        max_line = self.max_line_bytes
        if self._skipping or self._pending:
            j = data.find(b"\n")
            if j < 0:
                if not self._skipping:
                    self._pending += data
                    if len(self._pending) > max_line:
                        self._pending = bytearray()
                        self._skipping = True
                return
            end = base + j + 1
            if self._skipping or len(self._pending) + j > max_line:
                out.oversize.append((self.consumed, end - self.consumed))
            else:
                out.lines.append(bytes(self._pending) + data[:j])
                out.ends.append(end)
            self._pending = bytearray()
            self._skipping = False
            self.consumed = end
            i = j + 1
        last = data.rfind(b"\n")
        if last >= i:
            off = base + i
            lines, ends, oversize = out.lines, out.ends, out.oversize
            for line in data[i:last].split(b"\n"):
                start = off
                off += len(line) + 1
                if len(line) > max_line:
                    oversize.append((start, off - start))
                else:
                    lines.append(line)
                    ends.append(off)
            self.consumed = base + last + 1
            i = last + 1
        if i < len(data):
            tail = data[i:]
            if len(tail) > max_line:
                self._skipping = True
            else:
                self._pending = bytearray(tail)

    def reset(self) -> None:
        """Start over at offset 0 (the file was truncated)."""
        self.__init__(self.fd, offset=0, gz=self.gz, chunk_bytes=self.chunk_bytes, max_line_bytes=self.max_line_bytes)  # type: ignore[misc]

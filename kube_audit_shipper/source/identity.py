"""Who a file is: (device, inode) plus a fingerprint of its first bytes.

The fingerprint is a BLAKE2b-64 digest of the first `fp_len` bytes of the file's *content* (for a
gzip file, of the decompressed stream), fp_len = min(size, 1 KiB). While a file is shorter than
1 KiB the fingerprint grows with it: a longer head must start with the bytes already fingerprinted,
or the file was truncated and rewritten.

Matching a file found on disk to a saved checkpoint (`match_checkpoint`):
1. same (dev, ino) and the head still hashes to the checkpoint's fingerprint → the same file,
   possibly renamed (rotation): resume at its offset;
2. same (dev, ino) but a different head → the inode was reused, or the file truncated and rewritten:
   a new file, read from 0;
3. another inode whose head hashes to the fingerprint of a checkpoint that no live file claims, and
   the fingerprint covers a whole line or 1 KiB → the same content moved: kube-apiserver gzipped a
   backup (`audit-<ts>.log` → `audit-<ts>.log.gz`), or the file moved across devices; resume there.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

FP_BYTES = 1024
GZIP_MAGIC = b"\x1f\x8b"


def digest(head: bytes) -> str:
    return hashlib.blake2b(head, digest_size=8).hexdigest()


@dataclass(slots=True)
class Fingerprint:
    length: int
    digest: str

    @classmethod
    def of(cls, head: bytes) -> Fingerprint:
        head = head[:FP_BYTES]
        return cls(len(head), digest(head))

    @property
    def full(self) -> bool:
        return self.length >= FP_BYTES

    def matches(self, head: bytes) -> bool:
        """True if `head` (the file's current first bytes) starts with the fingerprinted bytes."""
        return len(head) >= self.length and digest(head[: self.length]) == self.digest

    def distinctive(self, head: bytes) -> bool:
        """Strong enough to identify content across inodes: 1 KiB, or at least one whole line."""
        return self.full or (self.length > 0 and b"\n" in head[: self.length])


def is_gzip_fd(fd: int) -> bool:
    return os.pread(fd, 2, 0) == GZIP_MAGIC


def read_head(fd: int, gz: bool) -> bytes:
    """The first FP_BYTES bytes of the content; for gzip, of the decompressed stream (partial is fine)."""
    if not gz:
        return os.pread(fd, FP_BYTES, 0)
    dec = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = b""
    pos = 0
    while len(out) < FP_BYTES:
        data = os.pread(fd, 16384, pos)
        if not data:
            break
        pos += len(data)
        try:
            out += dec.decompress(data, FP_BYTES - len(out))
            while dec.eof and dec.unused_data and len(out) < FP_BYTES:  # the next gzip member
                rest = dec.unused_data
                dec = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                out += dec.decompress(rest, FP_BYTES - len(out))
        except zlib.error:
            break
        if dec.eof and not dec.unused_data and len(out) >= FP_BYTES:
            break
    return out[:FP_BYTES]


def gzip_complete(fd: int) -> bool:
    """True if the whole file is a finished gzip stream (not one still being written)."""
    dec = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    pos = 0
    while True:
        data = os.pread(fd, 65536, pos)
        if not data:
            return dec.eof
        pos += len(data)
        try:
            while data:
                dec.decompress(data, 1 << 20)
                data = dec.unconsumed_tail
                if dec.eof and dec.unused_data:
                    data = dec.unused_data
                    dec = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        except zlib.error:
            return False


@dataclass(slots=True)
class FileStat:
    """What discovery learned of one file on disk."""

    path: str
    dev: int
    ino: int
    size: int
    mtime: float


class Checkpointed(Protocol):
    """What matching needs of a saved checkpoint entry (checkpoint.store.Entry has it)."""

    dev: int
    ino: int
    fp_len: int

    @property
    def fingerprint(self) -> Fingerprint: ...


E = TypeVar("E", bound=Checkpointed)


def match_checkpoint(stat: FileStat, head: bytes, entries: Sequence[E], claimed: set[int]) -> tuple[E | None, bool]:
    """Find the checkpoint entry for a file. Returns (entry, stale_same_inode).

    `entries` have attributes dev, ino and fp (a Fingerprint); `claimed` holds id()s of entries that
    a live tracked file already owns. `stale_same_inode` is True when an entry had this inode but a
    different head (reused inode / rewritten file): the caller retires that entry.
    """
    stale = False
    for e in entries:
        if e.dev == stat.dev and e.ino == stat.ino and id(e) not in claimed:
            if e.fingerprint.matches(head):
                return e, False
            stale = True
    for e in entries:
        if id(e) in claimed or (e.dev == stat.dev and e.ino == stat.ino):
            continue
        if e.fp_len and e.fingerprint.distinctive(head) and e.fingerprint.matches(head):
            return e, stale
    return None, stale

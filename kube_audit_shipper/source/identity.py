"""Who a file is: (device, inode) plus a fingerprint of its first bytes.

The fingerprint is a BLAKE2b-64 digest of the first `fp_len` bytes of the file's *content* (for a
gzip file, of the decompressed stream), fp_len = min(size, 1 KiB). While a file is shorter than
1 KiB the fingerprint grows with it: a longer head must start with the bytes already fingerprinted,
or the file was truncated and rewritten.

Reading what identifies a file: its head (decompressed for gzip), whether it is gzip, whether a gzip
file is complete. Matching a file to a saved checkpoint is the checkpoint's (checkpoint/files.py).
"""

from __future__ import annotations

import os
import zlib

from kube_audit_shipper.model import FP_BYTES

GZIP_MAGIC = b"\x1f\x8b"


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

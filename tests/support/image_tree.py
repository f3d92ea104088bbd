"""What is in a root file system, compared as file metadata: used to tell what a build stage or a run
added or changed, and whether shared objects still carry debug information."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

Entry = tuple[int, int, int, int, str, int]  # st_mode, uid, gid, size of a file, link target, mtime_ns


def tree(root: Path) -> dict[str, Entry]:
    """Every path under `root`, relative to it, with its lstat metadata; symbolic links are not followed."""
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, size, link, st.st_mtime_ns)
    return out


def changes(before: dict[str, Entry], after: dict[str, Entry], *, mtimes: bool) -> set[str]:
    """Paths added, removed or changed (with `mtimes`, a rewrite of the same size counts; a directory's mtime only
    says that an entry came or went, which shows by itself)."""

    def key(e: Entry) -> tuple[object, ...]:
        return e if mtimes and not stat.S_ISDIR(e[0]) else e[:5]

    return {p for p in before.keys() | after.keys() if p not in before or p not in after or key(before[p]) != key(after[p])}


def elf_sections(path: Path) -> set[str]:
    """Section names of a 64-bit little-endian ELF file (what `readelf -S` lists)."""
    data = path.read_bytes()
    if data[:6] != b"\x7fELF\x02\x01":
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    shoff, shentsize, shnum, shstrndx = struct.unpack_from("<Q", data, 0x28)[0], *struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    return {data[names_at + h[0] : data.index(b"\0", names_at + h[0])].decode() for h in headers}

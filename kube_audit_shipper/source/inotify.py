"""The three inotify(7) calls the tailer needs to hear that an open file changed, on the asyncio loop.

watchdog (watch.py) reports directory entries from its own threads; it is not used for writes because it turns
every IN_MODIFY into Python objects on two threads: one per audit event written. This is the opposite: one
non-blocking inotify descriptor whose readiness the event loop watches, read and discarded in one system call.
The tailer disarms it while it reads, so the kernel merges the writes of that time into one pending event
(inotify coalesces identical unread events): wake-ups follow the tailer's pace, not kube-apiserver's writes.

Linux only; `Inotify.create()` returns None elsewhere or when the kernel refuses (limits), and the tailer polls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import sys

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004  # link count: the file was deleted while open
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

#: what an open input file reports: written to or truncated, or its link count changed (deleted)
FILE_CHANGES = IN_MODIFY | IN_ATTRIB
_READ_BYTES = 64 * 1024


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


class Inotify:
    """One inotify descriptor. `watch_fd` watches the file an open descriptor refers to (through
    /proc/self/fd, so a rename or deletion after opening changes nothing); `drain` empties the queue."""

    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self._libc = libc
        self.fd = fd

    @classmethod
    def create(cls) -> Inotify | None:
        libc = _libc()
        if libc is None:
            return None
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            log.warning("inotify unavailable; open files are polled", extra={"error": os.strerror(err)})
            return None
        return cls(libc, fd)

    def watch_fd(self, fd: int, mask: int = FILE_CHANGES) -> int | None:
        """A watch on the open file `fd`; None when the kernel refuses (e.g. fs.inotify.max_user_watches)."""
        wd = self._libc.inotify_add_watch(self.fd, f"/proc/self/fd/{fd}".encode(), mask)
        if wd < 0:
            err = ctypes.get_errno()
            if err not in (errno.ENOENT, errno.EBADF):
                log.warning("cannot watch an input file; it is polled", extra={"error": os.strerror(err)})
            return None
        return int(wd)

    def unwatch(self, wd: int) -> None:
        """Remove a watch; a watch the kernel already removed (the file is gone) is no error."""
        self._libc.inotify_rm_watch(self.fd, wd)

    def drain(self) -> int:
        """Read and discard every pending event; returns the bytes read (0: nothing was pending)."""
        total = 0
        while True:
            try:
                data = os.read(self.fd, _READ_BYTES)
            except BlockingIOError:
                return total
            except InterruptedError:
                continue
            if not data:
                return total
            total += len(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

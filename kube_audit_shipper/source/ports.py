"""What the tailer is given: where files resume and who hears about them, and where the lines go.

The tailer imports nothing from checkpoint/, process/ or delivery/; these two protocols are its whole view
of them (checkpoint/files.FileRecords is a FileIndex, process/stage.Stage a LineOutput).
"""

from __future__ import annotations

import asyncio
from typing import Protocol, TypeVar

from kube_audit_shipper.model import FileStat, Fingerprint, Lines


class SavedFile(Protocol):
    """A file's saved record, as the tailer reads it: where it resumes, and whether there is nothing to read."""

    @property
    def offset(self) -> int: ...

    @property
    def complete(self) -> bool: ...


Saved = TypeVar("Saved", bound=SavedFile)


class FileIndex(Protocol[Saved]):
    """Where files resume, and what the tailer learns of each file it tracks (by its fid). `Saved` is the
    index's own record type: the tailer hands back, unread but for offset and complete, what lookup gave."""

    @property
    def first_start(self) -> bool:
        """No saved state at all: input.start_at and backfill_rotated apply to the files of the first scan."""
        ...

    def lookup(self, stat: FileStat, head: bytes) -> Saved | None:
        """The saved record this file continues (renamed, or its content moved), or None: a file to start."""
        ...

    def opened(self, fid: int, stat: FileStat, head: bytes, gz: bool, saved: Saved | None, offset: int, complete: bool) -> None: ...

    def renamed(self, fid: int, path: str) -> None: ...

    def resized(self, fid: int, size: int, fingerprint: Fingerprint) -> None: ...

    def drained(self, fid: int, end: int) -> None:
        """Read to its end at `end`: a rotated or deleted file, complete once everything up to `end` is acknowledged."""
        ...

    def abandoned(self, fid: int, offset: int) -> None:
        """Cannot be read past `offset` (corrupt): complete as it is."""
        ...

    def truncated(self, fid: int, new_fid: int, head: bytes) -> None:
        """Copytruncate: the same file starts over at 0 as `new_fid`."""
        ...

    def complete(self, fid: int) -> bool:
        """Everything of `fid` the tailer will ever read is acknowledged."""
        ...

    def released(self, fid: int) -> None:
        """The tailer is done with `fid`."""
        ...

    def present(self, seen: set[tuple[int, int]]) -> None:
        """After a scan: the (dev, inode) of every selected file on disk now."""
        ...

    def lost(self, path: str, unread_bytes: int, why: str) -> None:
        """A file went from disk before it could be read."""
        ...


class LineOutput(Protocol):
    """Where the lines go, and the parts of a file that are no lines."""

    @property
    def room(self) -> asyncio.Event:
        """Set while it takes more lines; the tailer waits on it (and keeps discovering meanwhile)."""
        ...

    async def take(self, fid: int, path: str, lines: Lines) -> None: ...

    def incomplete_tail(self, fid: int, path: str, offset: int, length: int) -> None:
        """A rotated file ends without a newline: [offset, offset + length) is all there will be."""
        ...

    def unreadable_rest(self, fid: int, path: str, offset: int, reason: str) -> None:
        """Nothing of the file can be read from `offset` on (a corrupt gzip stream)."""
        ...

    def retired(self, fid: int) -> None:
        """`fid` is gone (truncated): what is in flight for it moves no checkpoint."""
        ...

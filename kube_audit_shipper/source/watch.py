"""Hints that something changed: a directory entry (a file created, moved or deleted: inotify through watchdog,
coalesced) or an open input file (written, truncated, deleted: inotify.py on the event loop). Decides nothing.

kube-apiserver writes each audit event with its own write(), so a notification per write would wake the agent
once per event. Growth notifications are armed only while the tailer idles: the first write after it went idle
wakes it, and the writes made while it reads are merged by the kernel into one pending event. The tailer paces
its looks (`poll_interval_ms` at least between two) and, while every open file is watched, polls only as a
safety net (every `rescan_interval_ms`); an idle agent does not wake. A missed or overflowed notification
delays a look by at most that long, never stalls reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from kube_audit_shipper.source.inotify import Inotify

log = logging.getLogger(__name__)

# Directory entries only: no IN_MODIFY per write. kube-apiserver writes each event on its own, so that would be one
# wake-up of the event loop per audit event; growth of an open file is noticed by the tailer's fstat poll.
_ENTRY_EVENTS: list[type[FileSystemEvent]] = [FileCreatedEvent, FileDeletedEvent, FileMovedEvent, DirCreatedEvent, DirDeletedEvent, DirMovedEvent]


class ChangeHints(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, dirs: set[str]) -> None:
        self._loop = loop
        self._dirs = dirs
        self.wake = asyncio.Event()
        self._pending = threading.Event()
        self.rescan = False  # a file appeared, moved or went away: re-evaluate globs
        self._observer: Any = None  # a watchdog Observer while notifications run
        self._inotify: Inotify | None = None  # growth of open files, while started
        self._armed = False
        self.file_wakes = 0  # times a change of an open file woke the tailer

    def start(self) -> None:
        self._inotify = Inotify.create()
        observer = Observer()
        scheduled = 0
        for d in sorted(self._dirs):
            if not os.path.isdir(d):
                log.warning("input directory does not exist (yet); it is polled until it does", extra={"dir": d})
                continue
            try:
                observer.schedule(self, d, recursive=False, event_filter=_ENTRY_EVENTS)
                scheduled += 1
            except OSError as exc:  # e.g. no permission, inotify watch limit: polling covers it
                log.warning("cannot watch directory, relying on polling", extra={"dir": d, "error": str(exc)})
        if scheduled:
            observer.daemon = True
            try:
                observer.start()
            except OSError as exc:  # the directory went away, or inotify limits: polling covers it
                log.warning("cannot start file notifications, relying on polling", extra={"error": str(exc)})
                return
            self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        if self._inotify is not None:
            self._disarm()
            self._inotify.close()
            self._inotify = None

    # -- open files ------------------------------------------------------------------------------------------
    def watch_file(self, fd: int) -> int | None:
        """Be told when the file open as `fd` changes; None: not possible (not started, no inotify, limits)."""
        return self._inotify.watch_fd(fd) if self._inotify is not None else None

    def unwatch_file(self, wd: int) -> None:
        if self._inotify is not None:
            self._inotify.unwatch(wd)

    def arm(self) -> bool:
        """Wake on the next change of a watched open file; False when there are no file notifications."""
        if self._inotify is None:
            return False
        if not self._armed:
            self._loop.add_reader(self._inotify.fd, self._file_changed)
            self._armed = True
        return True

    def _disarm(self) -> None:
        if self._armed and self._inotify is not None:
            self._loop.remove_reader(self._inotify.fd)
        self._armed = False

    def _file_changed(self) -> None:  # the loop: the inotify descriptor is readable
        assert self._inotify is not None
        self._inotify.drain()
        self._disarm()  # until the tailer idles again: the writes meanwhile become one pending event
        self.file_wakes += 1
        self.wake.set()

    def on_any_event(self, event: FileSystemEvent) -> None:  # watchdog's thread
        if event.event_type in ("created", "moved", "deleted"):
            self.rescan = True
        elif event.event_type not in ("modified", "closed"):
            return
        if not self._pending.is_set():
            self._pending.set()
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                self._loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        self._pending.clear()
        self.wake.set()

"""Hints that a directory changed (a file created, moved or deleted): inotify through watchdog, coalesced.
Decides nothing.

Writes are not watched: kube-apiserver writes each audit event with its own write(), so IN_MODIFY would wake the
event loop once per event. The tailer fstat()s every open file every `poll_interval_ms` and reads what grew; a
missed or overflowed notification delays a rescan by at most `rescan_interval_ms`, never stalls reading.
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

    def start(self) -> None:
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

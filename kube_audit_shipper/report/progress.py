"""Progress of a report run on stderr: a live line on a terminal, a line per log otherwise, or nothing.

The live line is redrawn at most five times a second (a carriage return, no cursor control beyond it), so
it costs nothing next to the reading; it is cleared before anything else is printed.
"""

from __future__ import annotations

import time
from typing import TextIO

from kube_audit_shipper.report.markup import size

REDRAW_S = 0.2


class Progress:
    def __init__(self, stream: TextIO | None, total_bytes: int, *, live: bool) -> None:
        self.stream = stream
        self.total_bytes = total_bytes
        self.live = live and stream is not None
        self._done_bytes = 0  # of the logs finished
        self._started = time.monotonic()
        self._file_started = self._started
        self._next_draw = 0.0
        self._width = 0
        self._path = ""

    def file_started(self, path: str) -> None:
        self._path = path
        self._file_started = time.monotonic()

    def update(self, position_bytes: int, events: int) -> None:
        """Called often; draws only on a terminal and only every REDRAW_S."""
        if not self.live:
            return
        now = time.monotonic()
        if now < self._next_draw:
            return
        self._next_draw = now + REDRAW_S
        done = self._done_bytes + position_bytes
        rate = done / max(now - self._started, 1e-6)
        share = f" ({100 * done / self.total_bytes:.0f}%)" if self.total_bytes else ""
        line = f"reading {self._path}: {size(done)} of {size(self.total_bytes)}{share}, {size(rate)}/s, {events:,} events"
        self._draw(line)

    def file_done(self, path: str, size_bytes: int, lines: int, error: str) -> None:
        self._done_bytes += size_bytes
        if self.stream is None:
            return
        if self.live:
            self._draw("")
            self.stream.write("\r")
        elapsed = time.monotonic() - self._file_started
        outcome = f"error: {error}" if error else f"{lines:,} lines"
        self.stream.write(f"read {path}: {size(size_bytes)}, {outcome} ({elapsed:.1f} s)\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.stream is None:
            return
        if self.live:
            self._draw("")
            self.stream.write("\r")
        self.stream.write(text + "\n")
        self.stream.flush()

    def _draw(self, line: str) -> None:
        assert self.stream is not None
        padded = line.ljust(self._width)
        self._width = len(line)
        self.stream.write("\r" + padded)
        self.stream.flush()

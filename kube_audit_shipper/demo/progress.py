"""What the demo shows while it runs: events written, events shipped, rotations and alerts.

On a terminal, one line redrawn in place (a bar of the events shipped, then the counts), at most ten times a
second. Anywhere else (a pipe, a file, CI), a plain line every ``interval_s`` and one at the end, so a log of the
run stays short and readable. A log record written to the same terminal while the bar is shown would land in
the middle of it: `LiveLineGuard` wipes the bar first, and the next update draws it again below the record.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

__all__ = ["LiveLineGuard", "Progress", "ProgressDisplay"]

_REDRAW_S = 0.1
_BAR_MAX = 30
_BAR_MIN = 10


@dataclass(frozen=True)
class Progress:
    written: int = 0
    shipped: int = 0
    rotations: int = 0
    alerts: int = 0


class ProgressDisplay:
    """Shows `Progress` on ``out`` for a run of ``total`` events: live (``live=True``) or as plain lines."""

    def __init__(
        self, out: TextIO, total: int, *, live: bool, interval_s: float = 1.0, width: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.out, self.total, self.live, self.interval_s = out, total, live, interval_s
        self._width = width
        self._clock = clock
        self._started = clock()
        self._last = -float("inf")
        self._shown = ""  # the live line now on the terminal ("" when wiped)
        encoding = (getattr(out, "encoding", None) or "ascii").lower().replace("_", "-")
        self._full, self._empty = ("█", "░") if encoding in ("utf-8", "utf8") else ("#", "-")

    def update(self, p: Progress) -> None:
        """Show ``p`` if it is time to (live: every 0.1 s; plain: every ``interval_s``)."""
        now = self._clock()
        if now - self._last < (_REDRAW_S if self.live else self.interval_s):
            return
        self._last = now
        self._show(p, now)

    def finish(self, p: Progress) -> None:
        """Show the final ``p`` and end the live line, so what follows starts on a line of its own."""
        self._show(p, self._clock())
        if self.live:
            self.out.write("\n")
            self._shown = ""
        self.out.flush()

    def clear(self) -> None:
        """Wipe the live line (nothing to do for plain lines)."""
        if self.live and self._shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self._shown = ""

    def _show(self, p: Progress, now: float) -> None:
        counts = f"written {p.written:,}/{self.total:,}  shipped {p.shipped:,}  rotations {p.rotations}  alerts {p.alerts}"
        if not self.live:
            self.out.write(f"  {now - self._started:5.1f}s  {counts}\n")
            self.out.flush()
            return
        share = min(1.0, p.shipped / self.total) if self.total else 1.0
        width = self._width if self._width is not None else shutil.get_terminal_size((100, 24)).columns
        bar_width = max(_BAR_MIN, min(_BAR_MAX, width - len(counts) - 9))
        filled = int(share * bar_width)
        line = f"{self._full * filled}{self._empty * (bar_width - filled)} {share:4.0%}  {counts}"[: max(1, width - 1)]
        self.out.write(f"\r{line}\x1b[K")
        self.out.flush()
        self._shown = line


class LiveLineGuard(logging.Filter):
    """A filter for the log handlers of a terminal: wipes the live progress line before each record is written."""

    def __init__(self, display: ProgressDisplay) -> None:
        super().__init__()
        self.display = display

    def filter(self, record: logging.LogRecord) -> bool:
        self.display.clear()
        return True

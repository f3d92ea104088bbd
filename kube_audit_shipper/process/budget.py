"""One limit on the bytes of events held in memory; the reader waits when it is reached.

Bytes are charged when a chunk is handed to the sinks and released when every sink acknowledged it (or it
is dropped with a truncated file). `on_change` is told whenever the answer of `has_room` may have changed:
the processing stage turns that into the `room` event the reader waits on together with its other wake-ups
(new files to discover, a stop), so waiting for memory never stops discovery. Everything runs on the
event loop; no task is created per release.
"""

from __future__ import annotations

from collections.abc import Callable


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.in_use = 0
        self.waits = 0  # times the reader had to wait (backpressure)
        self.on_change: Callable[[], None] | None = None

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:  # a reload may raise or lower it
        self._limit = value
        self._update()

    def has_room(self) -> bool:
        return self.in_use < self._limit

    def charge(self, nbytes: int) -> None:
        self.in_use += nbytes
        self._update()

    def release(self, nbytes: int) -> None:
        self.in_use -= nbytes
        self._update()

    def _update(self) -> None:
        if self.on_change is not None:
            self.on_change()

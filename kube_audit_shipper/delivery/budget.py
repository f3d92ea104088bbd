"""One limit on the bytes of events held in memory; the reader waits when it is reached.

Bytes are charged when a chunk is handed to the sinks and released when every sink acknowledged it (or it
is dropped with a truncated file). `room` is set while in use is below the limit: the reader waits on it
together with its other wake-ups (new files to discover, a stop), so waiting for memory never stops
discovery. Everything runs on the event loop; no task is created per release.
"""

from __future__ import annotations

import asyncio


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.in_use = 0
        self.waits = 0  # times the reader had to wait (backpressure)
        self.room = asyncio.Event()
        self.room.set()

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:  # a reload may raise or lower it
        self._limit = value
        self._update()

    def has_room(self) -> bool:
        return self.in_use < self._limit

    async def wait_for_room(self) -> None:
        """Return once in_use is below the limit (one chunk may overshoot it; chunks are bounded)."""
        if self.has_room():
            return
        self.waits += 1
        await self.room.wait()

    def charge(self, nbytes: int) -> None:
        self.in_use += nbytes
        self._update()

    def release(self, nbytes: int) -> None:
        self.in_use -= nbytes
        self._update()

    def _update(self) -> None:
        if self.in_use < self._limit:
            self.room.set()
        else:
            self.room.clear()

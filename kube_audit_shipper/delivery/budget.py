"""One limit on the bytes of events held in memory; the reader waits when it is reached."""

from __future__ import annotations

import asyncio


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.waits = 0  # times the reader had to wait (backpressure)
        self._cond = asyncio.Condition()

    async def wait_for_room(self) -> None:
        """Return once in_use is below the limit (one chunk may overshoot it; chunks are bounded)."""
        if self.in_use < self.limit:
            return
        self.waits += 1
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_use < self.limit)

    def charge(self, nbytes: int) -> None:
        self.in_use += nbytes

    def release(self, nbytes: int) -> None:
        self.in_use -= nbytes
        if self.in_use < self.limit:
            loop_cond = self._cond

            async def _notify() -> None:
                async with loop_cond:
                    loop_cond.notify_all()

            asyncio.get_running_loop().create_task(_notify())

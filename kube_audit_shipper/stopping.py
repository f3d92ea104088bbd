"""How long stopping may still take, and waiting within it.

`run` stops within `shutdown_timeout_s` of the stop request (SIGTERM/SIGINT). `run --once` waits for
everything it read to be delivered, spools included, with no bound, until a stop is requested: then it
too gets `shutdown_timeout_s` from that moment. A second request ends every wait at once. Whatever was
not delivered by then is spooled or left unacknowledged, so it is read again at the next start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from typing import Any


class StopClock:
    def __init__(self, stop: asyncio.Event, force: asyncio.Event, timeout_s: float, *, drain: bool) -> None:
        self._stop = stop
        self._force = force
        self._timeout_s = timeout_s
        self._deadline = None if drain and not stop.is_set() else time.monotonic() + timeout_s

    @property
    def draining(self) -> bool:
        """No bound yet: `run --once` waiting for everything, no stop requested."""
        return self.left() is None

    def left(self) -> float | None:
        """Seconds the stop may still take; None while draining without a bound."""
        if self._force.is_set():
            return 0.0
        if self._deadline is None and self._stop.is_set():
            self._deadline = time.monotonic() + self._timeout_s
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    async def wait(self, aws: Iterable[Awaitable[Any]]) -> set[asyncio.Future[Any]]:
        """Wait until all of `aws` are done or the time is up; returns those still pending."""
        pending: set[asyncio.Future[Any]] = {asyncio.ensure_future(a) for a in aws}
        while pending:
            left = self.left()
            if left == 0.0:
                break
            interrupt = asyncio.ensure_future(self._stop.wait() if left is None else self._force.wait())
            try:
                _, pending = await asyncio.wait(pending | {interrupt}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                interrupt.cancel()
            pending.discard(interrupt)
        return pending

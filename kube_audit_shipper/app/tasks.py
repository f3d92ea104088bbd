"""Every background task of a pipeline is started here and watched: none vanishes.

A task that ends while the pipeline runs (an exception, or a loop that returned) is logged with its name and
traceback and recorded in `failed`; the pipeline then stops with that error (`failure` is done), and
readiness reports it meanwhile. At stop, `cancel` ends the tasks that run until cancelled, in reverse order
of their start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], bool] = {}  # task -> expected to end by itself
        self.failed: list[str] = []
        self.failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self._stopping = False

    def start(self, name: str, coro: Coroutine[Any, Any, Any], *, ends: bool = False) -> asyncio.Task[Any]:
        """Run `coro` as `name`. `ends`: it finishes by itself (a retirement, a drain); else it runs until cancelled."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[task] = ends
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        ends = self._tasks.pop(task, True)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None and (ends or self._stopping):
            return
        error = exc if exc is not None else RuntimeError(f"background task {task.get_name()} ended by itself")
        self.failed.append(task.get_name())
        log.error("a background task of the agent died; the agent stops", extra={"task": task.get_name()}, exc_info=exc)
        if not self.failure.done():
            self.failure.set_result(error)

    def running(self, prefix: str) -> list[asyncio.Task[Any]]:
        """The tasks still running whose name starts with `prefix`."""
        return [t for t in self._tasks if t.get_name().startswith(prefix) and not t.done()]

    async def cancel(self) -> None:
        """Cancel the tasks that run until cancelled and wait for them (at stop)."""
        self._stopping = True
        forever = [t for t, ends in self._tasks.items() if not ends]
        for task in reversed(forever):
            task.cancel()
        for task in reversed(forever):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

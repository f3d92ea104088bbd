"""Cancelling a task so that it ends.

A library may lose a cancellation that races the result it was waiting for (asyncio.wait_for before
Python 3.12 does, CPython gh-86296; the package bans it in pyproject.toml). A stop must not then leave a
sink retrying forever: `cancel_and_wait` cancels again until the task has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any], *, again_every_s: float = 0.2) -> None:
    """Cancel `task` and return once it has ended, cancelling it again every `again_every_s` while it runs.
    Its result or failure is retrieved (asyncio does not log it); what it means is the caller's to decide."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=again_every_s)
    if not task.cancelled():
        task.exception()

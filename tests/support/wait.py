"""Wait for a condition with a deadline: the one way a test waits for something to happen.

A test never sleeps for a guessed time and hopes the thing happened meanwhile: it polls a predicate until
it holds, and fails naming what it waited for once the deadline passes. A passing wait returns as soon as
the condition holds, so the deadline only bounds how long a broken test takes to fail; it is generous
because a loaded machine (CI, two cores shared with other jobs) is slow, and a timing never decides a
verdict here (speed is measured in tests/bench/).

Polls start at 1 ms and back off to 20 ms: a condition that is nearly there costs nothing, a long wait does
not keep the event loop (shared with the agent under test) or the CPU busy. Conditions must be stable
once true (a count reached, a state entered); a transient one would be a race in the test.

`until` is for coroutines (the loop runs the code under test between polls); `until_blocking` for plain
test code that drives subprocesses or servers in threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
FIRST_POLL_S = 0.001
MAX_POLL_S = 0.02

What = str | Callable[[], str]


def _timed_out(timeout_s: float, what: What) -> AssertionError:
    return AssertionError(f"timed out after {timeout_s}s waiting for {what() if callable(what) else what}")


async def until(predicate: Callable[[], T], *, timeout_s: float = DEFAULT_TIMEOUT_S, what: What = "condition", max_poll_s: float = MAX_POLL_S) -> T:
    """Return the predicate's first truthy value; AssertionError once `timeout_s` passed without one.

    `what` names the condition in the failure (a callable is asked only then, for the state at that moment)."""
    deadline = time.monotonic() + timeout_s
    pause = FIRST_POLL_S
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise _timed_out(timeout_s, what)
        await asyncio.sleep(pause)
        pause = min(pause * 2, max_poll_s)
    return value


def until_blocking(predicate: Callable[[], T], *, timeout_s: float = DEFAULT_TIMEOUT_S, what: What = "condition", max_poll_s: float = MAX_POLL_S) -> T:
    """`until` for code outside an event loop: the calling thread sleeps between polls."""
    deadline = time.monotonic() + timeout_s
    pause = FIRST_POLL_S
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise _timed_out(timeout_s, what)
        time.sleep(pause)
        pause = min(pause * 2, max_poll_s)
    return value

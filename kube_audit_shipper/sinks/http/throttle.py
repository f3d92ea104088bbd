"""A chat target's own send-rate limit: at most N messages in any window of W seconds, and pauses the backend asks for.

DingTalk takes 20 messages a minute per robot (the 21st gets errcode 130101 and the robot is throttled for
10 minutes); Slack about one a second per webhook. The delivery engine has no rate limit of its own, so the
target keeps one: `send` calls `check()` first, which raises LocalThrottle at once (no network) when the
window is full or a pause is on; `classify` turns that into Retry(after_s=...), so the engine's backoff
waits at least that long and the batch keeps its place (the chat targets send one request at a time).

A message counts from the moment its answer came back (or its attempt failed), not from when it was sent:
the backend saw it no later than that, so N answers inside any W seconds of ours means at most N arrivals
inside any W seconds of the backend's, whatever the network delays.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class LocalThrottle(Exception):
    """Raised by `send` instead of sending: the target's own rate limit says wait `after_s` seconds."""

    def __init__(self, after_s: float, why: str) -> None:
        self.after_s = after_s
        super().__init__(why)


class SendWindow:
    def __init__(self, messages: int, window_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.messages = messages
        self.window_s = window_s
        self.clock = clock
        self._done: deque[float] = deque()  # when recent attempts ended, oldest first
        self._inflight = 0
        self._paused_until = 0.0
        self._pause_reason = ""
        self.throttled = 0  # sends refused locally (a metric and a test hook)

    def wait_s(self) -> float:
        """Seconds until another message may start (0: now)."""
        now = self.clock()
        while self._done and now - self._done[0] >= self.window_s:
            self._done.popleft()
        wait = max(0.0, self._paused_until - now)
        over = len(self._done) + self._inflight - self.messages  # this many more must leave the window first
        if over >= 0:  # (when attempts in flight hold every slot, a whole window)
            wait = max(wait, self._done[over] + self.window_s - now if over < len(self._done) else self.window_s)
        return wait

    def start(self) -> None:
        """Claim a slot for one attempt, or raise LocalThrottle."""
        wait = self.wait_s()
        if wait > 0:
            self.throttled += 1
            if self._paused_until > self.clock():
                raise LocalThrottle(wait, f"paused by the backend ({self._pause_reason}) for {wait:.1f} s more")
            raise LocalThrottle(wait, f"at most {self.messages} messages per {self.window_s:g} s: next one in {wait:.1f} s")
        self._inflight += 1

    def finish(self) -> None:
        """The attempt that `start` allowed has ended (answered or failed)."""
        self._inflight = max(0, self._inflight - 1)
        self._done.append(self.clock())

    def pause(self, seconds: float, reason: str) -> None:
        """Send nothing for `seconds` (the backend throttled us, or told us when to come back)."""
        until = self.clock() + seconds
        if until > self._paused_until:
            self._paused_until, self._pause_reason = until, reason

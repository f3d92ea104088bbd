"""How long something has been blocked, logged once per interval: shared by the delivery engine
(a sink's sends) and the S3 uploader (a sink's uploads)."""

from __future__ import annotations

import logging
import time
from typing import Any

BLOCKED_LOG_INTERVAL_S = 60.0


class BlockedClock:
    def __init__(self, log: logging.Logger, *, blocked: str, unblocked: str, extra: dict[str, Any]) -> None:
        self._log = log
        self._blocked_msg = blocked
        self._unblocked_msg = unblocked
        self._extra = extra
        self.since: float | None = None  # monotonic time the block began; None when not blocked
        self._logged = 0.0

    def blocked(self, reason: str | None, *, log_every_s: float = BLOCKED_LOG_INTERVAL_S) -> None:
        """Still (or newly) blocked: one error log per `log_every_s`."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        if now - self._logged >= log_every_s:
            self._logged = now
            self._log.error(self._blocked_msg, extra={**self._extra, "reason": reason})

    def clear(self) -> None:
        """Not blocked (any more)."""
        if self.since is not None:
            self._log.info(self._unblocked_msg, extra={**self._extra, "blocked_s": round(time.monotonic() - self.since, 1)})
        self.since = None
        self._logged = 0.0

    def seconds(self) -> float:
        return 0.0 if self.since is None else max(0.0, time.monotonic() - self.since)

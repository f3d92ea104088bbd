"""A sink's state (ok, retrying, blocked) and how long it has been blocked, logged once per interval.

Shared by the sink runner (a sink's sends) and by a sink's own retrying work (the S3 uploader's calls): a
block begins with one error log and repeats it once per `BLOCKED_LOG_INTERVAL_S` while it lasts; it ends
with an info log saying how long it lasted. The state values are the `state` label values of
`kube_audit_shipper_sink_state` (and of the S3 upload state).
"""

from __future__ import annotations

import logging
import time
from enum import Enum
from typing import Any

BLOCKED_LOG_INTERVAL_S = 60.0


class SinkState(str, Enum):
    OK = "ok"
    RETRYING = "retrying"  # attempts fail for a reason that passes (network, 5xx, throttling)
    BLOCKED = "blocked"  # attempts cannot succeed until an operator acts (credentials, a missing bucket, TLS)

    def __str__(self) -> str:
        return self.value


class SinkHealth:
    def __init__(self, log: logging.Logger, *, blocked: str, unblocked: str, extra: dict[str, Any]) -> None:
        self._log = log
        self._blocked_msg = blocked
        self._unblocked_msg = unblocked
        self._extra = extra
        self.state = SinkState.OK
        self.reason: str | None = None  # why it is not ok; None when ok
        self.blocked_since: float | None = None  # time.monotonic() the block began; None when not blocked
        self._logged = 0.0

    def set(self, state: SinkState, reason: str | None = None) -> bool:
        """Enter `state` (again) for `reason`; True when the state changed."""
        now = time.monotonic()
        if state is SinkState.BLOCKED:
            if self.blocked_since is None:
                self.blocked_since = now
            if now - self._logged >= BLOCKED_LOG_INTERVAL_S:
                self._logged = now
                self._log.error(self._blocked_msg, extra={**self._extra, "reason": reason})
        elif self.blocked_since is not None:
            self._log.info(self._unblocked_msg, extra={**self._extra, "blocked_s": round(now - self.blocked_since, 1)})
            self.blocked_since = None
            self._logged = 0.0
        changed = state is not self.state
        self.state = state
        self.reason = None if state is SinkState.OK else reason
        return changed

    def blocked_for_s(self) -> float:
        return 0.0 if self.blocked_since is None else max(0.0, time.monotonic() - self.blocked_since)

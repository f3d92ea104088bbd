"""Writes under state_dir that fail: counted, logged clearly but not in a flood, and visible to readiness.

A full or read-only state directory must never make the agent skip events: the writer that failed keeps
its data and tries again with backoff (the dead-letter store holds its records in memory and the reader
waits; the checkpoint writer keeps the last durable checkpoint; a spool write keeps the batch in memory).
This tracker is what the operator sees meanwhile: `kube_audit_shipper_state_write_errors_total{what}`,
an error log naming the path and the errno (the first failure, then at most one a minute per kind while
it lasts), an info log when writes work again, and `/readyz` not ready while any kind is failing.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import Counter
from pathlib import Path

log = logging.getLogger(__name__)


def describe(exc: OSError) -> str:
    """`No space left on device (ENOSPC)`: the message and the symbolic errno."""
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{exc.strerror or exc} ({code})"


class StateWrites:
    def __init__(self, *, log_every_s: float = 60.0) -> None:
        self.errors: Counter[str] = Counter()  # failed writes by what: checkpoint, deadletter, spool, ...
        self._failing: dict[str, tuple[str, str, float]] = {}  # what -> (path, error, since, monotonic)
        self._logged: dict[str, float] = {}
        self._log_every_s = log_every_s
        self._lock = threading.Lock()

    def failed(self, what: str, path: Path | str, exc: OSError) -> None:
        """A write of `what` to `path` failed with `exc`; its writer keeps the data and will try again."""
        now = time.monotonic()
        error = describe(exc)
        with self._lock:
            self.errors[what] += 1
            first = what not in self._failing
            self._failing[what] = (str(path), error, self._failing[what][2] if not first else now)
            due = first or now - self._logged.get(what, 0.0) >= self._log_every_s
            if due:
                self._logged[what] = now
                count = self.errors[what]
        if due:
            log.error(
                "cannot write to the state directory; nothing is skipped: the data is kept and the write is retried with backoff",
                extra={"what": what, "path": str(path), "error": error, "failed_writes": count},
            )

    def ok(self, what: str) -> None:
        """A write of `what` succeeded: if it was failing, it is not any more."""
        if what not in self._failing:  # unlocked fast path: the common case
            return
        with self._lock:
            state = self._failing.pop(what, None)
        if state is not None:
            log.info("state directory writes work again", extra={"what": what, "path": state[0], "failed_for_s": round(time.monotonic() - state[2], 1)})

    def failing(self) -> dict[str, str]:
        """What is failing now: what -> "path: error"."""
        with self._lock:
            return {what: f"{path}: {error}" for what, (path, error, _) in self._failing.items()}

"""The demo's fake kube-apiserver: a thread writing the scenario's lines through `RotatingAuditWriter`.

It writes at ``rate_per_s`` lines a second (0: as fast as it can), rotates by rename at ``max_bytes`` and gzips the
backups, as kube-apiserver does. One thing a real apiserver would not do: it rotates a file only once the agent
has read everything written so far (`AuditFeed.read_up_to` tells it how far the agent has read). Without that, a
writer hundreds of times faster than any apiserver leaves the agent a whole file behind at each rotation, and the
agent rightly warns that the backup it is reading could be deleted before it is shipped: a warning about the
demo's writer, not about the agent.

`AuditFeed` is what the writer thread and the demo's event loop share: counts for the progress display, how far
the agent has read, a stop flag, and the writer's error if it failed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from kube_audit_shipper.demo.apiserver import RotatingAuditWriter
from kube_audit_shipper.demo.scenario import Scenario

__all__ = ["AuditFeed"]

_WAKE_S = 0.5  # longest sleep between two looks at the stop flag
_AHEAD_S = 0.005  # with a rate, the writer sleeps once it is this far ahead of it


class AuditFeed:
    """Writes ``scenario`` to ``path`` in a thread (`start`); counts what it wrote; `stop` ends it early."""

    def __init__(self, scenario: Scenario, path: Path, *, rate_per_s: float, max_bytes: int) -> None:
        if rate_per_s < 0:
            raise ValueError("rate_per_s must be >= 0")
        self.scenario, self.path, self.rate_per_s, self.max_bytes = scenario, path, rate_per_s, max_bytes
        self.written = 0
        self.written_bytes = 0
        self.rotations = 0
        self.done = False
        self.error: BaseException | None = None
        self.waiting_for_read: int | None = None  # while it holds a rotation back: the bytes the agent must have read
        self._read_bytes = 0
        self._stopping = False
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="demo-apiserver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def read_up_to(self, read_bytes: int) -> None:
        """The agent has read this many bytes of the log so far (the writer may rotate once it has read all)."""
        with self._cv:
            if read_bytes > self._read_bytes:
                self._read_bytes = read_bytes
                self._cv.notify_all()

    def stop(self) -> None:
        """Ask the writer to finish the line it is writing and stop; `join` waits for it."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()

    def join(self) -> None:
        self._thread.join()

    def _wait(self, until: float | None = None, read_bytes: int | None = None) -> bool:
        """Sleep until the monotonic time ``until`` or until the agent has read ``read_bytes``; False if stopped."""
        with self._cv:
            self.waiting_for_read = read_bytes
            try:
                while not self._stopping:
                    if read_bytes is not None and self._read_bytes >= read_bytes:
                        return True
                    if until is not None and (left := until - time.monotonic()) <= 0:
                        return True
                    self._cv.wait(_WAKE_S if until is None else min(_WAKE_S, left))
                return False
            finally:
                self.waiting_for_read = None

    def _run(self) -> None:
        started = time.monotonic()
        try:
            with RotatingAuditWriter(self.path, max_bytes=self.max_bytes, compress=True) as writer:
                for _, line in self.scenario.records():
                    if writer.size and writer.size + len(line) + 1 > self.max_bytes and not self._wait(read_bytes=self.written_bytes):
                        break
                    writer.write(line)
                    with self._cv:
                        self.written += 1
                        self.written_bytes += len(line) + 1
                        self.rotations = writer.rotations
                    due = started + self.written / self.rate_per_s if self.rate_per_s > 0 else 0.0
                    if due - time.monotonic() > _AHEAD_S and not self._wait(until=due):
                        break
        except BaseException as exc:  # noqa: BLE001  # reported by the demo, never silent
            self.error = exc
        finally:
            with self._cv:
                self.done = True

"""The sd_notify protocol, in the standard library only: tell systemd when the agent is ready,
reloading, stopping, alive (watchdog) and what it is doing (status line).

systemd passes the address of its notification socket in NOTIFY_SOCKET: an absolute path of an
AF_UNIX datagram socket, or a name starting with '@' for the abstract namespace ('@' stands for the
leading NUL byte). A message is one datagram of newline-separated KEY=VALUE assignments. Without
NOTIFY_SOCKET (not started by systemd, or Type= is not notify) every call is a no-op that returns
False, so the agent calls the same methods everywhere.

The watchdog is armed when WATCHDOG_USEC is set (WatchdogSec=) and WATCHDOG_PID, if set, is this
process: the agent must then send WATCHDOG=1 more often than every WATCHDOG_USEC microseconds;
`watchdog_interval` is half of it, as sd_watchdog_enabled(3) recommends.

Typical use (see `Notifier.keepalive` for the loop):

    notifier = Notifier.from_environ()
    ... build the pipeline ...
    notifier.ready("shipping 1 file to 1 sink")
    ... on SIGHUP: notifier.reloading(); reload; notifier.ready("reloaded")
    ... on SIGTERM: notifier.stopping("finishing in-flight batches")
    notifier.close()
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = ["Notifier"]

# Unit of WATCHDOG_USEC, MONOTONIC_USEC and EXTEND_TIMEOUT_USEC.
_USEC = 1_000_000


def _monotonic_usec() -> int:
    # CLOCK_MONOTONIC is the clock systemd compares MONOTONIC_USEC against (not time.monotonic's
    # documented-as-unspecified clock, although on Linux it is the same one).
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text: str) -> str:
    """A value in a notification message cannot contain a newline: it would start a new assignment."""
    return " ".join(text.split())


class Notifier:
    """One connection to the service manager's notification socket (or none: then a no-op).

    Holds no global state: the environment is read once, at construction, from the mapping given.
    Sending never raises OSError: a failure (the manager went away, a full socket buffer) returns False, so
    notifications can never take the agent down.
    """

    def __init__(self, notify_socket: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address: str | bytes | None = _parse_address(notify_socket)
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self.last_error: OSError | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> Notifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (default: os.environ and os.getpid())."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=_watchdog_usec(env, os.getpid() if pid is None else pid))

    # -- state -----------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """True when started by systemd with a notification socket."""
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 messages (half of WatchdogSec), or None without a watchdog."""
        if self.watchdog_usec is None or not self.enabled:
            return None
        return self.watchdog_usec / _USEC / 2

    # -- messages --------------------------------------------------------------------------------
    def notify(self, *assignments: str) -> bool:
        """Send one message of KEY=VALUE assignments; True when it was sent."""
        if self.address is None:
            return False
        for a in assignments:
            key, sep, _ = a.partition("=")
            if not sep or not key or "\n" in a:
                raise ValueError(f"not a single-line KEY=VALUE assignment: {a!r}")
        message = "\n".join(assignments).encode("utf-8")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            self.last_error = exc
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):  # transient: keep the socket
                self.close()
            return False
        self.last_error = None
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: startup finished (or a reload finished), the pipeline runs."""
        return self.notify("READY=1", *self._status(status))

    def reloading(self, status: str | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (systemd ≥ 253 requires it to match the reload to the
        request): send before reloading, and ready() when done."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}", *self._status(status))

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: shutdown began (systemd then stops expecting watchdog pings to mean health)."""
        return self.notify("STOPPING=1", *self._status(status))

    def watchdog(self) -> bool:
        """WATCHDOG=1: the main loop is alive. A no-op (False) when the watchdog is not armed."""
        if self.watchdog_interval is None:
            return False
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """STATUS=…: the one-line summary `systemctl status` shows."""
        return self.notify(*self._status(text))

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC: ask for more time in the current start, reload or stop phase."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * _USEC))}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the watchdog loop ----------------------------------------------------------------------
    async def keepalive(self, healthy: Callable[[], bool], status: Callable[[], str] | None = None, *, status_every_s: float = 10.0) -> None:
        """Run until cancelled: every watchdog_interval, send WATCHDOG=1 if healthy() is true; every
        status_every_s, send STATUS=status() if the text changed.

        A ping is sent from the event loop, so a blocked loop sends none; healthy() adds the pipeline's
        own progress check, so a loop that runs while the pipeline is stuck sends none either, and
        systemd restarts the service after WatchdogSec. Without systemd this returns at once.
        """
        wd = self.watchdog_interval
        if not self.enabled or (wd is None and status is None):
            return
        last_status: str | None = None
        next_ping = next_status = time.monotonic()
        while True:
            now = time.monotonic()
            if wd is not None and now >= next_ping:
                if healthy():
                    self.watchdog()
                next_ping = now + wd
            if status is not None and now >= next_status:
                text = _one_line(status())
                if text != last_status and self.status(text):
                    last_status = text
                next_status = now + status_every_s
            await asyncio.sleep(
                max(0.0, min(next_ping if wd is not None else float("inf"), next_status if status is not None else float("inf")) - time.monotonic())
            )

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        return () if text is None else (f"STATUS={_one_line(text)}",)


def _parse_address(value: str | None) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode("utf-8")  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # relative paths and other socket types (vsock:…) are not supported: no-op


def _watchdog_usec(env: Mapping[str, str], pid: int) -> int | None:
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != pid:
                return None  # meant for another process (e.g. our parent)
        except ValueError:
            return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec if usec > 0 else None

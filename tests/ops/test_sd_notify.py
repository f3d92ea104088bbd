"""kube_audit_shipper.systemd.Notifier against a real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_audit_shipper.systemd import Notifier
from tests.support.wait import until


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: a datagram socket, by path or in the abstract namespace."""

    def __init__(self, address: str) -> None:
        self.env_value = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(2.0)

    def recv(self) -> dict[str, str]:
        data = self.sock.recv(65536).decode()
        fields = dict(line.split("=", 1) for line in data.split("\n"))
        assert len(fields) == data.count("\n") + 1, f"duplicate keys in {data!r}"
        return fields

    def pending(self) -> list[dict[str, str]]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(dict(line.split("=", 1) for line in self.sock.recv(65536).decode().split("\n")))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(2.0)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    address = str(tmp_path / "notify") if request.param == "path" else f"@kas-test-{uuid.uuid4().hex}"
    fake = FakeSystemd(address)
    yield fake
    fake.close()


def test_without_notify_socket_everything_is_a_noop() -> None:
    n = Notifier.from_environ({})
    assert not n.enabled and n.watchdog_interval is None
    assert n.ready("x") is False
    assert n.reloading() is False
    assert n.stopping() is False
    assert n.watchdog() is False
    assert n.status("x") is False
    assert n.extend_timeout(5) is False
    asyncio.run(asyncio.wait_for(n.keepalive(lambda: True, lambda: "s"), 1))  # returns at once
    n.close()


@pytest.mark.parametrize("value", ["", "relative/path", "vsock:2:1234"])
def test_unsupported_addresses_are_a_noop(value: str) -> None:
    assert not Notifier.from_environ({"NOTIFY_SOCKET": value}).enabled


def test_ready_status_stopping(systemd: FakeSystemd) -> None:
    with Notifier.from_environ({"NOTIFY_SOCKET": systemd.env_value}) as n:
        assert n.enabled
        assert n.ready("shipping 2 files to 1 sink")
        assert systemd.recv() == {"READY": "1", "STATUS": "shipping 2 files to 1 sink"}
        assert n.status("read 10,\n shipped\t10")  # one line: a newline would start a new assignment
        assert systemd.recv() == {"STATUS": "read 10, shipped 10"}
        assert n.stopping("finishing in-flight batches")
        assert systemd.recv() == {"STOPPING": "1", "STATUS": "finishing in-flight batches"}
        assert n.ready()
        assert systemd.recv() == {"READY": "1"}
        assert n.extend_timeout(1.5)
        assert systemd.recv() == {"EXTEND_TIMEOUT_USEC": "1500000"}


def test_reloading_carries_monotonic_usec(systemd: FakeSystemd) -> None:
    with Notifier.from_environ({"NOTIFY_SOCKET": systemd.env_value}) as n:
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert n.reloading("reloading config")
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        msg = systemd.recv()
    assert msg["RELOADING"] == "1" and msg["STATUS"] == "reloading config"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after


def test_invalid_assignments_are_refused(systemd: FakeSystemd) -> None:
    with Notifier.from_environ({"NOTIFY_SOCKET": systemd.env_value}) as n:
        for bad in ("READY", "=1", "A=1\nB=2"):
            with pytest.raises(ValueError):
                n.notify(bad)
        assert n.notify("A=1", "B=x=y")
        assert systemd.recv() == {"A": "1", "B": "x=y"}


def test_watchdog_settings_from_environment() -> None:
    sock = {"NOTIFY_SOCKET": "/run/systemd/notify"}
    assert Notifier.from_environ({**sock, "WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    assert Notifier.from_environ({**sock, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 15.0
    # meant for another process (systemd sets WATCHDOG_PID to the main process; a child inherits it)
    assert Notifier.from_environ({**sock, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=4242).watchdog_interval is None
    assert Notifier.from_environ({**sock, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, pid=4242).watchdog_interval == 15.0
    for bad in ("0", "-5", "abc", ""):
        assert Notifier.from_environ({**sock, "WATCHDOG_USEC": bad}).watchdog_interval is None
    assert Notifier.from_environ({**sock, "WATCHDOG_USEC": "x", "WATCHDOG_PID": "nope"}).watchdog_interval is None
    # no socket, no watchdog, even with WATCHDOG_USEC
    assert Notifier.from_environ({"WATCHDOG_USEC": "30000000"}).watchdog_interval is None


def test_watchdog_ping_only_when_armed(systemd: FakeSystemd) -> None:
    with Notifier.from_environ({"NOTIFY_SOCKET": systemd.env_value}) as n:
        assert n.watchdog() is False
        assert systemd.pending() == []
    with Notifier.from_environ({"NOTIFY_SOCKET": systemd.env_value, "WATCHDOG_USEC": "1000000"}) as n:
        assert n.watchdog() is True
        assert systemd.recv() == {"WATCHDOG": "1"}


def test_a_vanished_manager_never_raises(tmp_path: Path) -> None:
    fake = FakeSystemd(str(tmp_path / "gone"))
    n = Notifier.from_environ({"NOTIFY_SOCKET": fake.env_value})
    assert n.ready()
    fake.close()
    os.unlink(tmp_path / "gone")
    assert n.status("nobody listens") is False
    assert isinstance(n.last_error, OSError)
    # and it recovers when the socket is back
    fake = FakeSystemd(str(tmp_path / "gone"))
    assert n.status("back") is True and n.last_error is None
    assert fake.recv() == {"STATUS": "back"}
    n.close()
    fake.close()


def test_keepalive_pings_while_healthy_and_reports_status_changes(systemd: FakeSystemd) -> None:
    healthy = [True]
    texts = iter(["a", "a", "b"])

    def status() -> str:
        return next(texts, "b")

    async def scenario() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        n = Notifier.from_environ({"NOTIFY_SOCKET": systemd.env_value, "WATCHDOG_USEC": "100000"})  # ping every 50 ms
        task = asyncio.create_task(n.keepalive(lambda: healthy[0], status, status_every_s=0.05))
        while_healthy: list[dict[str, str]] = []

        def pinged_and_changed() -> bool:  # 3 pings and the status change a -> b
            while_healthy.extend(systemd.pending())
            return sum(m == {"WATCHDOG": "1"} for m in while_healthy) >= 3 and any(m.get("STATUS") == "b" for m in while_healthy)

        await until(pinged_and_changed, what="3 watchdog pings and the status change")
        healthy[0] = False
        await asyncio.sleep(0.06)  # a ping decided before the flip may still arrive
        systemd.pending()
        await asyncio.sleep(0.3)  # no ping may come now: 6 intervals of 50 ms unhealthy
        while_unhealthy = systemd.pending()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        n.close()
        return while_healthy, while_unhealthy

    healthy_msgs, unhealthy_msgs = asyncio.run(scenario())
    pings = [m for m in healthy_msgs if m == {"WATCHDOG": "1"}]
    assert 3 <= len(pings) <= 10, healthy_msgs  # ~8 in 0.4 s at one per 50 ms
    assert [m["STATUS"] for m in healthy_msgs if "STATUS" in m] == ["a", "b"]  # only changes are sent
    assert not any("WATCHDOG" in m for m in unhealthy_msgs), unhealthy_msgs  # no pings: systemd restarts us


def test_keepalive_without_watchdog_sends_status_only(systemd: FakeSystemd) -> None:
    async def scenario() -> list[dict[str, str]]:
        n = Notifier.from_environ({"NOTIFY_SOCKET": systemd.env_value})
        task = asyncio.create_task(n.keepalive(lambda: True, lambda: "steady", status_every_s=0.02))
        got: list[dict[str, str]] = []
        await until(lambda: got.extend(systemd.pending()) or got, what="the first status")
        await asyncio.sleep(0.15)  # no second message may come: the same status is not sent again (7 checks at 20 ms)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        n.close()
        return got + systemd.pending()

    msgs = asyncio.run(scenario())
    assert msgs == [{"STATUS": "steady"}]


def test_keepalive_with_neither_watchdog_nor_status_returns(systemd: FakeSystemd) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": systemd.env_value})
    asyncio.run(asyncio.wait_for(n.keepalive(lambda: True), 1))
    assert systemd.pending() == []

"""SIGTERM/SIGINT stop `run --once` as they stop `run`: within shutdown_timeout_s, with an exit code that
says not everything was shipped; a second signal ends at once, cleanly, without a traceback.

The sink is a Loki URL on a local port where a server accepts connections and never answers, so a
batch stays in flight for as long as the sink's request timeout; or where nothing listens at all, so
every attempt is refused and retried forever. Waiting bounds in these tests only catch a hang.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.corpus import REPO, numbered_lines
from tests.support.harness import append
from tests.support.wait import until_blocking


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and reads requests, never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conns.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        for c in conns:
            c.close()
        srv.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Agent:
    def __init__(self, tmp_path: Path, port: int, *, shutdown_timeout_s: float, timeout_s: float = 30.0) -> None:
        log = tmp_path / "log" / "audit.log"
        append(log, numbered_lines(200))
        cfg = {
            "state_dir": str(tmp_path / "state"),
            "input": {"paths": [str(log)]},
            "batch": {"max_wait_ms": 20},
            "sinks": [{"name": "loki", "type": "loki", "url": f"http://127.0.0.1:{port}", "timeout_s": timeout_s, "retry": {"initial_ms": 50, "max_ms": 200}}],
            "metrics": {"listen": None},
            "shutdown_timeout_s": shutdown_timeout_s,
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        self.stderr = tmp_path / "agent.stderr"
        with self.stderr.open("w") as err:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kube_audit_shipper", "run", "--once", "-c", str(path)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err
            )

    def log(self) -> str:
        return self.stderr.read_text()

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_bounds_run_once_by_the_shutdown_timeout(tmp_path: Path, sig: signal.Signals) -> None:
    agent = Agent(tmp_path, closed_port(), shutdown_timeout_s=1)
    until_blocking(lambda: "sink send failed; retrying" in agent.log(), what="the sink retrying")
    agent.proc.send_signal(sig)
    rc = agent.wait(30)  # before the fix it retried for as long as the sink failed
    log = agent.log()
    assert rc == 3, log
    assert "Traceback" not in log
    assert "stopped before everything read was shipped" in log


def test_a_second_signal_ends_at_once_without_a_traceback(tmp_path: Path, silent_server: int) -> None:
    agent = Agent(tmp_path, silent_server, shutdown_timeout_s=600, timeout_s=600)  # nothing would end on its own
    until_blocking(lambda: "new file" in agent.log(), what="the agent reading")
    agent.proc.send_signal(signal.SIGTERM)
    until_blocking(lambda: "stopping: no more reads" in agent.log(), what="the first stop logged")
    agent.proc.send_signal(signal.SIGTERM)
    rc = agent.wait(30)
    log = agent.log()
    assert rc == 3, log
    assert "Traceback" not in log and "CancelledError" not in log
    assert "second stop signal" in log

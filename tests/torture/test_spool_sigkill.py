"""SIGKILL the agent (tests/torture/fault_agent.py) at seeded random moments while a writer appends to
the audit log and the "flaky" HTTP sink is first down (batches go to its disk spool) and then back but
slow (the spool is replayed). A file sink "archive" runs alongside.

Oracle: after a final `--once`, every auditID written reached the archive and the FaultServer at least
once, nothing arrived that was never written, flaky's spool is empty, nothing was dead-lettered, and an
event arrived at most once per run at the archive and twice per run at flaky (read again from the file
after a checkpoint that did not make it to disk, plus replayed from a spool whose ack was not yet
durable).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.spool import SEGMENT_HEADER_SIZE, Spool
from tests.support.corpus import REPO, audit_id, numbered_lines
from tests.support.fault_sink import OK, FaultServer, slow
from tests.support.harness import append, sink_lines
from tests.support.wait import until_blocking

SEED = 20261123
MAX_EVENTS = 100
SPOOL_BYTES = 8 << 20
KILLS_DOWN = 4  # kills while flaky is down: the agent is writing its spool
KILLS_REPLAY = 4  # kills while flaky is back but slow: the agent is replaying its spool


class Writer(threading.Thread):
    """Appends numbered events to the audit log in small bursts until stopped."""

    def __init__(self, path: Path, rng: random.Random, rate: float) -> None:
        super().__init__(name="audit-writer", daemon=True)
        self.path, self.rng, self.rate = path, rng, rate
        self.written = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            n = self.rng.randint(10, 40)
            append(self.path, numbered_lines(n, start=self.written, prefix="k"))
            self.written += n
            self.stopping.wait(n / self.rate)

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def spooled_bytes(spool_dir: Path) -> int:
    """Bytes of records in spool segments on disk (headers left out)."""
    if not spool_dir.exists():
        return 0
    return sum(max(0, p.stat().st_size - SEGMENT_HEADER_SIZE) for p in spool_dir.glob("*.spool"))


def test_sigkill_during_spool_writes_and_replay_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    logdir, out, state = tmp_path / "log", tmp_path / "out", tmp_path / "state"
    logdir.mkdir()
    spool_dir = state / "spool" / "flaky"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(state),
                "input": {"paths": [str(logdir / "audit.log")], "poll_interval_ms": 50, "rescan_interval_ms": 300},
                "batch": {"max_events": MAX_EVENTS, "max_bytes": 1 << 20, "max_wait_ms": 50},
                "sinks": [
                    {"name": "archive", "type": "file", "path": str(out), "rotate_bytes": 1 << 20},
                    {
                        "name": "flaky",  # the FaultSink's stand-in config: a type that may have concurrency > 1
                        "type": "sls",
                        "endpoint": "http://127.0.0.1:9",
                        "project": "fault-test",
                        "logstore": "flaky",
                        "retry": {"initial_ms": 20, "max_ms": 200},
                        "concurrency": 2,
                        "spool": {"max_bytes": SPOOL_BYTES, "segment_bytes": 1 << 20},
                    },
                ],
                "checkpoint": {"flush_interval_ms": 100},
                "metrics": {"listen": None},
                "memory_limit_bytes": 4 << 20,
                "shutdown_timeout_s": 1,
            }
        )
    )
    agent_log = tmp_path / "kube_audit_shipper.log"

    def start(url: str, *extra: str) -> subprocess.Popen[bytes]:
        with open(agent_log, "ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen([sys.executable, "-m", "tests.torture.fault_agent", str(cfg), url, *extra], cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)

    def kill_after(proc: subprocess.Popen[bytes], seconds: float) -> None:
        time.sleep(seconds)
        if proc.poll() is not None:
            pytest.fail(f"agent exited by itself ({proc.returncode}): {agent_log.read_text(errors='replace')[-3000:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    runs = 0
    writer = Writer(logdir / "audit.log", rng, rate=700)
    with FaultServer() as server:
        server.down()
        writer.start()
        try:
            # phase 1: flaky is down; each run spools (fsync, ack) while the writer goes on
            spool_seen = []
            for _ in range(KILLS_DOWN):
                kill_after(start(server.url), rng.uniform(0.5, 1.3))
                runs += 1
                spool_seen.append(spooled_bytes(spool_dir))
            assert max(spool_seen) > 0, "nothing was ever spooled: the kills did not hit spool writes"
            assert server.stored_count() == 0

            # phase 2: flaky is back but slow; each run replays the spool in order (and spools new batches)
            server.default = slow(0.05)
            server.up()
            during_replay = 0
            for _ in range(KILLS_REPLAY):
                before = server.requests
                agent = start(server.url)
                until_blocking(lambda agent=agent, before=before: server.requests > before or agent.poll() is not None, what="the agent sending again")
                kill_after(agent, rng.uniform(0.3, 1.3))  # a random point of the replay (it used to be 1.0-2.0 s after a ~0.7 s start)
                runs += 1
                if server.requests > before and spooled_bytes(spool_dir) > 0:
                    during_replay += 1  # killed after replay began and before the spool was empty
            assert during_replay >= 1, "no kill landed while the spool was being replayed"
        finally:
            writer.stop()

        # the end: flaky answers at once; --once ships what the files hold and drains the spool
        server.default = OK
        final = start(server.url, "--once")
        runs += 1
        try:
            assert final.wait(60) == 0, agent_log.read_text(errors="replace")[-3000:]
        finally:
            if final.poll() is None:
                final.kill()
                final.wait()
        stored = Counter(server.stored)

    written = [f"k-{i:09d}" for i in range(writer.written)]
    assert len(written) > 3000
    archived = Counter(audit_id(x) for x in sink_lines(out))
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temp files left after a clean --once"
    for name, got, per_run in (("archive", archived, 1), ("flaky", stored, 2)):
        missing = set(written) - set(got)
        assert not missing, f"{name}: {len(missing)} events lost, e.g. {sorted(missing)[:5]}"
        invented = set(got) - set(written)
        assert not invented, f"{name}: events never written: {sorted(invented)[:5]}"
        worst = max(got.values())
        assert worst <= per_run * runs, f"{name}: an event arrived {worst} times in {runs} runs"
    spool = Spool(spool_dir, max_bytes=SPOOL_BYTES)
    try:
        assert spool.unacked_count == 0, "the final --once left batches in the spool"
    finally:
        spool.close()
    dl = DeadLetterStore(state, max_bytes=1 << 20, max_event_bytes=1 << 20)
    try:
        assert list(dl.iter_records()) == []
    finally:
        dl.close()

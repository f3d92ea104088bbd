"""SIGKILL the agent at random moments while a fake kube-apiserver appends and rotates.

Oracle: after a final `run --once`, every auditID on disk in the audit logs (active, backups, .gz)
reached the file sink at least once; nothing arrived that was never written; duplicates stay within
the in-flight window of each kill.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest
import yaml

from tests.support.corpus import REPO
from tests.support.harness import sink_lines

RATE = 3000  # events/s written by the fake apiserver
EVENTS = 15000
FLUSH_MS = 100
MAX_WAIT_MS = 100
MAX_EVENTS = 200


def _ids_on_disk(logdir: Path) -> list[str]:
    out = []
    for p in sorted(logdir.iterdir()):
        data = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
        for line in data.splitlines():
            if line.strip():
                out.append(msgspec.json.decode(line)["auditID"])
    return out


def _agent(cfg: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(cfg.parent / "kube_audit_shipper.log", "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "kube_audit_shipper", "--log-level", "warning", "run", "-c", str(cfg), *extra],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def _log_tail(cfg: Path) -> str:
    return (cfg.parent / "kube_audit_shipper.log").read_text(errors="replace")[-3000:]


@pytest.mark.parametrize(("compress", "workers"), [(False, 0), (True, 0), (True, 2)], ids=["rename", "rename+gzip", "rename+gzip+workers"])
def test_sigkill_during_writes_and_rotations_loses_nothing(tmp_path: Path, compress: bool, workers: int) -> None:
    rng = random.Random(20261122 + compress)
    logdir, out = tmp_path / "log", tmp_path / "out"
    logdir.mkdir()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "state"),
                # the writer rotates before the first agent starts: the oracle is "everything on disk"
                "input": {"paths": [str(logdir / "audit.log")], "poll_interval_ms": 100, "rescan_interval_ms": 300, "backfill_rotated": True},
                "batch": {"max_events": MAX_EVENTS, "max_bytes": 1 << 20, "max_wait_ms": MAX_WAIT_MS},
                "sinks": [{"name": "archive", "type": "file", "path": str(out), "rotate_bytes": 1 << 20}],
                "checkpoint": {"flush_interval_ms": FLUSH_MS},
                "metrics": {"listen": None},
                "memory_limit_bytes": 4 << 20,
                # with workers, every read is shaped by a worker process (SIGKILL takes them down with the agent)
                "processing": {"workers": workers, "worker_min_bytes": 1},
            }
        )
    )
    writer_args = [
        sys.executable,
        "-m",
        "kube_audit_shipper.demo.apiserver",
        "--path",
        str(logdir / "audit.log"),
        "--events",
        str(EVENTS),
        "--rate",
        str(RATE),
        "--max-bytes",
        str(400_000),
        "--seed",
        "7",
    ]
    if compress:
        writer_args.append("--compress")
    writer = subprocess.Popen(writer_args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kills = 0
    deadline = time.monotonic() + 120
    try:
        while writer.poll() is None and time.monotonic() < deadline:
            agent = _agent(cfg)
            time.sleep(rng.uniform(0.3, 1.2))
            if agent.poll() is not None:
                pytest.fail(f"agent exited by itself ({agent.returncode}): {_log_tail(cfg)}")
            agent.send_signal(signal.SIGKILL)
            agent.wait()
            kills += 1
    finally:
        if writer.poll() is None:
            writer.terminate()
        wout, werr = writer.communicate(timeout=30)
    assert writer.returncode == 0, werr.decode()[-2000:]
    summary = json.loads(wout.decode().strip().splitlines()[-1])
    assert summary["events"] == EVENTS and summary["rotations"] > 3, summary
    assert kills >= 3

    final = _agent(cfg, "--once")
    final.wait(timeout=120)
    assert final.returncode == 0, _log_tail(cfg)

    written = _ids_on_disk(logdir)
    assert len(written) == EVENTS and len(set(written)) == EVENTS
    shipped = [msgspec.json.decode(line)["auditID"] for line in sink_lines(out)]
    assert not [p for p in os.listdir(out) if p.startswith(".")], "temp files left behind after a clean --once"
    missing = set(written) - set(shipped)
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    invented = set(shipped) - set(written)
    assert not invented, f"events that were never written: {sorted(invented)[:5]}"
    dups = sum(n - 1 for n in Counter(shipped).values())
    # per kill: at most what was acknowledged since the last checkpoint write plus what was in flight
    window = RATE * (FLUSH_MS + MAX_WAIT_MS) / 1000 + 4 * MAX_EVENTS
    assert dups <= kills * window, f"{dups} duplicates over {kills} kills exceeds {kills * window:.0f}"

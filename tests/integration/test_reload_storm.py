"""Reload storms while events flow: no event stranded or duplicated by a reload, no sink written by two runners.

A writer appends numbered events to the audit log for the whole test while the config file alternates
between variants that change both sinks (a file sink's rotation, the other's batching) and SIGHUPs arrive
faster than a changed sink can retire. At the end every auditID is in each sink exactly once, and each
sink's files are whole zstd streams (no torn or truncated file: one runner per sink at a time).
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import yaml
import zstandard

from tests.support.corpus import REPO, numbered_lines
from tests.support.harness import append, sink_lines
from tests.support.wait import until_blocking

EVENTS = 3000


def _config(tmp_path: Path, variant: int) -> dict[str, object]:
    return {
        "state_dir": str(tmp_path / "state"),
        "input": {"paths": [str(tmp_path / "log" / "audit.log")], "poll_interval_ms": 20},
        "batch": {"max_events": 40, "max_wait_ms": 20},
        "enrich": {"enabled": False},
        "sinks": [
            {"name": "a", "type": "file", "path": str(tmp_path / "out-a"), "rotate_bytes": (1 + variant % 2) << 20},
            {"name": "b", "type": "file", "path": str(tmp_path / "out-b"), "batch": {"max_events": 30 + 10 * (variant % 3), "max_wait_ms": 20}},
        ],
        "checkpoint": {"flush_interval_ms": 50},
        "metrics": {"listen": None},
    }


def _whole_zstd_files(out: Path) -> None:
    for path in out.iterdir():
        if path.name.startswith("."):
            continue
        reader = zstandard.ZstdDecompressor().stream_reader(path.read_bytes(), read_across_frames=True)
        reader.read()  # raises on a torn or truncated frame


def test_reload_storm_strands_and_duplicates_nothing(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    log.parent.mkdir(parents=True)
    log.touch()
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(_config(tmp_path, 0)))
    lines = numbered_lines(EVENTS, prefix="storm")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kube_audit_shipper", "run", "-c", str(cfg_file)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    done = threading.Event()

    def write() -> None:  # ~EVENTS over the storm and a little after
        for i in range(0, EVENTS, 30):
            append(log, lines[i : i + 30])
            time.sleep(0.06)  # the writer's pace (kube-apiserver's traffic), not a wait for the agent
        done.set()

    writer = threading.Thread(target=write)
    try:
        until_blocking(lambda: (tmp_path / "state" / "checkpoints.json").exists(), what="the agent started")
        writer.start()
        for variant in range(1, 51):  # 50 SIGHUPs, 0.1 s apart: faster than a changed sink retires
            cfg_file.write_text(yaml.safe_dump(_config(tmp_path, variant)))
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.1)  # the storm's pace
        writer.join()
        for name in ("a", "b"):
            until_blocking(lambda n=name: len(sink_lines(tmp_path / f"out-{n}", include_tmp=True)) >= EVENTS, timeout_s=120, what=f"every event in sink {name}")
    finally:
        if writer.is_alive():
            writer.join()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert b"Traceback" not in err, err.decode()[-3000:]
    expected = collections.Counter(msgspec.json.decode(x)["auditID"] for x in lines)
    for name in ("a", "b"):
        got = collections.Counter(msgspec.json.decode(x)["auditID"] for x in sink_lines(tmp_path / f"out-{name}"))
        missing = expected - got
        duplicated = {k: n for k, n in got.items() if n > 1}
        assert not missing, f"sink {name}: {len(missing)} events missing"
        assert not duplicated, f"sink {name}: {len(duplicated)} events duplicated"
        _whole_zstd_files(tmp_path / f"out-{name}")

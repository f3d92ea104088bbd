"""The real agent as a black box for the model-based tailer test: its command line, signals, logs,
/metrics and checkpoint file, and a state directory whose disk can be filled.

Only what a user sees is used: `python -m kube_audit_shipper run -c FILE` with JSON logs on stderr, the
/metrics endpoint, `<state_dir>/checkpoints.json` (format in docs/ARCHITECTURE.md) and the file sinks'
output. No module of the agent is imported, so the test holds while its internals change.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.harness import sink_lines
from tests.support.wait import until_blocking

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Knobs:
    """The settings the test varies by reload: a sink's batch and compression (the sink is replaced), and
    the checkpoint interval (the pipeline restarts from its checkpoint in the same process)."""

    sink_b_variant: int = 0
    checkpoint_variant: int = 0
    workers: int = 0  # set per example, never by reload: 1 = every read shaped by a worker process (issue 17)


@dataclass(frozen=True)
class Limits:
    flush_interval_ms: tuple[int, int] = (50, 60)
    memory_limit_bytes: int = 1 << 20  # the smallest the config takes
    read_chunk_bytes: int = 16384


def agent_config(work: Path, state_dir: Path, log_path: Path, knobs: Knobs, limits: Limits) -> dict[str, Any]:
    b_events, b_level = [(7, 3), (13, 1)][knobs.sink_b_variant]
    return {
        "state_dir": str(state_dir),
        "input": {
            "paths": [str(log_path)],
            "poll_interval_ms": 20,
            "rescan_interval_ms": 100,
            "backfill_rotated": True,  # a restart before the first checkpoint is never a "first start" that skips backups
            "read_chunk_bytes": limits.read_chunk_bytes,
        },
        "batch": {"max_events": 20, "max_bytes": 64 << 10, "max_wait_ms": 20},
        "sinks": [
            {"name": "a", "type": "file", "path": str(work / "out-a")},
            {
                "name": "b",
                "type": "file",
                "path": str(work / "out-b"),
                "rotate_bytes": 1 << 20,  # the smallest the config takes
                "compression_level": b_level,
                "batch": {"max_events": b_events, "max_bytes": 64 << 10, "max_wait_ms": 30},
            },
        ],
        "checkpoint": {"flush_interval_ms": limits.flush_interval_ms[knobs.checkpoint_variant]},
        "metrics": {"listen": "127.0.0.1:0"},
        "memory_limit_bytes": limits.memory_limit_bytes,
        # events ship byte for byte as written, so a sink's line is compared with the written line itself
        "enrich": {"enabled": False},
        "detect": {"enabled": False},
        "processing": {"workers": knobs.workers, "worker_min_bytes": 1},
    }


class StateDisk:
    """The agent's state directory, on a 1 MiB tmpfs of its own when running as root (so it can be filled
    to ENOSPC and freed); a plain directory otherwise (`can_fill` False)."""

    def __init__(self, base: Path) -> None:
        self.mount = base / "statefs"
        self.mount.mkdir(parents=True)
        self.can_fill = os.geteuid() == 0
        self.mounted = False
        if self.can_fill:
            proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(self.mount)], capture_output=True, text=True, timeout=30)
            self.mounted = self.can_fill = proc.returncode == 0
        self.state_dir = self.mount / "state"
        self.filler = self.mount / "filler"

    @property
    def full(self) -> bool:
        return self.filler.exists()

    def fill(self) -> None:
        """Write a file until the file system answers ENOSPC."""
        with open(self.filler, "ab", buffering=0) as fh:
            for block in (b"\0" * 65536, b"\0" * 4096, b"\0" * 512):
                try:
                    while True:
                        fh.write(block)
                except OSError as exc:
                    assert exc.errno == 28, exc  # ENOSPC

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.mount)], check=False, capture_output=True, timeout=30)
            self.mounted = False


@dataclass
class Run:
    """One process of the agent."""

    proc: subprocess.Popen[bytes]
    log: Path
    step: int  # model step in which it started
    ended: str = ""  # "killed", "stopped", or what it died of
    ended_step: int | None = None  # the model step in which it was killed

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """Its JSON log records; a line that is not one (a traceback printed by Python itself) becomes
        {"raw": line}."""
        out: list[dict[str, Any]] = []
        for line in self.text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                doc = None
            out.append(doc if isinstance(doc, dict) else {"raw": line})
        return out


@dataclass
class AgentProcess:
    work: Path
    config_path: Path
    runs: list[Run] = field(default_factory=list)

    @property
    def current(self) -> Run:
        return self.runs[-1]

    def write_config(self, cfg: dict[str, Any]) -> None:
        """Replace the config file atomically: the agent may read it at any moment (restart, SIGHUP)."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(cfg))
        os.replace(tmp, self.config_path)

    def start(self, step: int) -> None:
        log = self.work / f"agent-{len(self.runs) + 1:03d}.log"
        with open(log, "ab") as fh:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "kube_audit_shipper", "--log-format", "json", "--log-level", "info", "run", "-c", str(self.config_path)],
                cwd=Path(__file__).resolve().parents[2],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=fh,
            )
        self.runs.append(Run(proc, log, step))
        # the metrics server starts after the signal handlers are installed: from then on SIGHUP reloads
        until_blocking(lambda: self.port() is not None or proc.poll() is not None, timeout_s=START_TIMEOUT_S, what="the agent serving metrics")
        assert proc.poll() is None, f"the agent exited at start with {proc.returncode}:\n{self.current.text()[-4000:]}"

    def alive(self) -> bool:
        return bool(self.runs) and self.current.proc.poll() is None

    def port(self) -> int | None:
        """Port of the newest pipeline's metrics server (a reload that restarts the pipeline opens a new one)."""
        port = None
        for r in self.current.records():
            if r.get("msg") == "serving metrics" and isinstance(r.get("address"), str):
                port = int(r["address"].rsplit(":", 1)[1])
        return port

    def kill(self) -> None:
        run = self.current
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait(timeout=30)
        run.ended = "killed"

    def hup(self) -> None:
        self.current.proc.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        run = self.current
        run.proc.send_signal(signal.SIGTERM)
        rc = run.proc.wait(timeout=STOP_TIMEOUT_S)
        run.ended = "stopped"
        return rc

    def abandon(self) -> None:
        """After a failure: end the process whatever it is doing."""
        for run in self.runs:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait(timeout=30)

    def metrics(self) -> defaultdict[str, float]:
        """/metrics of the current pipeline, each sample as `name{labels}` -> value (0 for one not exported)."""
        port = self.port()
        assert port is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        out: defaultdict[str, float] = defaultdict(float)
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def tail(self, chars: int = 4000) -> str:
        return self.current.text()[-chars:] if self.runs else ""


def run_once(config_path: Path, log: Path) -> int:
    """`run --once` (reads what the files hold, waits until every sink has it, exits); stderr appended to `log`."""
    with open(log, "ab") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "kube_audit_shipper", "--log-format", "json", "run", "--once", "-c", str(config_path)],
            cwd=Path(__file__).resolve().parents[2],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=fh,
            timeout=120,
        )
    return proc.returncode


def new_file_on_inode(directory: Path, ino: int, attempts: int = 256) -> Path | None:
    """Create empty files in `directory` until one gets inode `ino` (just freed: ext4 hands it out again
    soon); return it, or None. The other files are removed. How a new audit.log comes to have the inode of
    a file the agent knew, made deterministic."""
    made: list[Path] = []
    try:
        for i in range(attempts):
            probe = directory / f"probe-{i}"
            probe.touch()
            made.append(probe)
            if probe.stat().st_ino == ino:
                made.pop()
                return probe
        return None
    finally:
        for p in made:
            p.unlink()


def read_checkpoint(state_dir: Path) -> dict[str, Any] | None:
    """checkpoints.json (replaced atomically by the agent, so always whole), or None before the first."""
    try:
        doc: dict[str, Any] = json.loads((state_dir / "checkpoints.json").read_bytes())
    except FileNotFoundError:
        return None
    assert doc["version"] == 1, doc
    return doc


def read_sinks(work: Path, names: tuple[str, ...], *, include_tmp: bool = True) -> dict[str, Counter[bytes]]:
    """Every line each file sink holds (temp files too: every fsynced frame of one is kept), counted.
    A running agent may rename a temp file while it is listed: then the listing is read again."""
    out: dict[str, Counter[bytes]] = {}
    for name in names:
        for attempt in range(10):
            try:
                out[name] = Counter(sink_lines(work / f"out-{name}", include_tmp=include_tmp))
                break
            except FileNotFoundError:
                if attempt == 9:
                    raise
    return out

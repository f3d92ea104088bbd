"""Steady: a writer (`tests.bench.writer`) appends events at a fixed rate for a fixed time, rotating the log, while
the agent (``python -m kube_audit_shipper run``, not ``--once``) tails it; the benchmark watches the sink's output as it grows.

Per rate:

* agent CPU as a percentage of one core over the writer's window (``/proc/<pid>/stat`` sampled every 250 ms,
  interpolated at the writer's first and last write), and peak RSS (``ru_maxrss`` at exit; VmRSS sampled too);
* end-to-end latency, written → durable at the sink: the writer records when each line's ``write`` returned; the
  benchmark polls the sink directory every few ms, reads the new bytes of each output file (by inode, so the
  rename of a finished file changes nothing), decompresses the new zstd frames and notes when each auditID
  first appeared. The sink fsyncs each frame before acknowledging the batch, so appearing is durability up to
  that fsync (a few ms at most);
* a count that every event arrived: the events the agent must ship are computed independently after the run,
  from the log files on disk (every event for ``no_policy``; for ``policy``, those the sample policy keeps,
  decided by the agent's policy code: the drop decision is the policy's semantics, the delivery is what is
  tested), and compared with what appeared: missing, unexpected and duplicate auditIDs.

Drained means every log file is covered by the agent's checkpoint (``checkpoints.json``: offset = size), which
it writes only after every sink acknowledged; the agent is then stopped with SIGTERM.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from kube_audit_shipper.demo.apiserver import list_backups
from kube_audit_shipper.demo.events import AuditEventGenerator
from tests.bench.agentrun import DEFAULT_MAX_WAIT_MS, agent_argv, agent_config, output_dir
from tests.bench.inputs import iter_lines
from tests.bench.measure import MB, Load, Spawner, cpu_seconds, memory_kib, settle

_ID_KEY = b'"auditID":"'
POLL_S = 0.005
SAMPLE_S = 0.25
ROTATIONS_WANTED = 4  # the writer rotates about this many times per run, whatever the rate


@dataclass
class _Stream:
    fd: int
    pos: int = 0
    dec: Any = None
    tail: bytes = b""


@dataclass
class SinkWatcher:
    """Follows the zstd file sink's output files as they are appended to; notes when each auditID appears."""

    out_dir: Path
    streams: dict[int, _Stream] = field(default_factory=dict)
    seen: dict[bytes, float] = field(default_factory=dict)
    duplicates: int = 0
    lines: int = 0
    without_id: int = 0
    bytes_read: int = 0

    def poll(self) -> int:
        """Read what is new; returns the number of new lines."""
        try:
            names = os.listdir(self.out_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            if ".ndjson.zst" not in name:
                continue
            try:
                st = os.stat(self.out_dir / name)
            except FileNotFoundError:  # renamed between listdir and stat: found under its new name next time
                continue
            if st.st_ino in self.streams:
                continue
            try:
                fd = os.open(self.out_dir / name, os.O_RDONLY)
            except FileNotFoundError:
                continue
            if os.fstat(fd).st_ino != st.st_ino:
                os.close(fd)
                continue
            self.streams[st.st_ino] = _Stream(fd, dec=zstandard.ZstdDecompressor().decompressobj())
        new = 0
        for s in self.streams.values():
            size = os.fstat(s.fd).st_size
            if size <= s.pos:
                continue
            now = time.monotonic()
            data = os.pread(s.fd, size - s.pos, s.pos)
            s.pos += len(data)
            self.bytes_read += len(data)
            new += self._lines(s, self._decompress(s, data), now)
        return new

    @staticmethod
    def _decompress(s: _Stream, data: bytes) -> bytes:
        out = []
        while data:
            out.append(s.dec.decompress(data))
            if not s.dec.eof:
                break
            data = s.dec.unused_data  # one frame per batch: the next frame starts here
            s.dec = zstandard.ZstdDecompressor().decompressobj()
        return b"".join(out)

    def _lines(self, s: _Stream, text: bytes, now: float) -> int:
        text = s.tail + text
        cut = text.rfind(b"\n") + 1
        s.tail = text[cut:]
        if not cut:
            return 0
        seen = self.seen
        n = 0
        for line in text[: cut - 1].split(b"\n"):
            n += 1
            i = line.find(_ID_KEY)
            if i < 0:
                self.without_id += 1
                continue
            key = line[i + len(_ID_KEY) : i + len(_ID_KEY) + 36]
            if key in seen:
                self.duplicates += 1
            else:
                seen[key] = now
        self.lines += n
        return n

    def close(self) -> None:
        for s in self.streams.values():
            os.close(s.fd)
        self.streams.clear()


def log_files(log: Path) -> list[Path]:
    return [*list_backups(log), log]


def drained(state_dir: Path, log: Path) -> bool:
    """Every log file covered by the agent's checkpoint (offset == size)."""
    try:
        data = json.loads((state_dir / "checkpoints.json").read_bytes())
    except (FileNotFoundError, ValueError):
        return False
    entries = {(e["dev"], e["ino"]): e for e in data.get("files", [])}
    for p in log_files(log):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue
        e = entries.get((st.st_dev, st.st_ino))
        if e is None or e["offset"] < st.st_size:
            return False
    return True


def expected_ids(files: list[Path], kind: str, policy_file: Path) -> set[bytes]:
    """The auditIDs the agent must ship: every event, or those the policy keeps (decided by the agent's policy code)."""
    out: set[bytes] = set()
    if kind == "no_policy":
        for line in iter_lines(files):
            i = line.find(_ID_KEY) + len(_ID_KEY)
            out.add(line[i : i + 36])
        return out
    from kube_audit_shipper.process.policy.event import decode_event
    from kube_audit_shipper.process.policy.load import load_policy
    from kube_audit_shipper.process.policy.match import DecisionCache
    from kube_audit_shipper.process.policy.trim import KEPT, trim_event

    policy, _ = load_policy(str(policy_file))
    evaluate = DecisionCache(policy).evaluate_event
    for line in iter_lines(files):
        event = decode_event(line)
        if trim_event(event, evaluate(event)) == KEPT:
            i = line.find(_ID_KEY) + len(_ID_KEY)
            out.add(line[i : i + 36])
    return out


def _interpolate(samples: list[tuple[float, float]], t: float) -> float:
    """CPU seconds at time t from (time, cpu) samples (linear between the two around t)."""
    before = [s for s in samples if s[0] <= t]
    after = [s for s in samples if s[0] >= t]
    if not before:
        return samples[0][1]
    if not after:
        return samples[-1][1]
    (t0, c0), (t1, c1) = before[-1], after[0]
    return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))]


def mean_event_bytes(seed: int, n: int = 5000) -> float:
    lines = list(AuditEventGenerator(seed).lines(n))
    return sum(len(line) + 1 for line in lines) / n


def run_rate(
    spawner: Spawner,
    work: Path,
    *,
    rate: int,
    seconds: float,
    seed: int,
    kind: str,
    policy_file: Path,
    event_bytes: float,
    agent_src: Path,
    profile_argv: list[str] | None = None,
) -> dict[str, Any]:
    """One steady run at `rate` events/s for `seconds`. With `profile_argv` (a py-spy command line ending in
    ``--pid``), the agent is also sampled while the writer runs, and `result["profiler_exit"]` says how that went."""
    name = f"steady-{rate}"
    root = work / name
    log = root / "log" / "audit.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_CREAT | os.O_WRONLY, 0o600)  # kube-apiserver's log exists before the agent starts
    os.close(fd)
    config = agent_config(work, name, log, kind, backfill=True)
    state_dir = config.parent / "state"
    max_bytes = max(1 << 20, int(rate * seconds * event_bytes / ROTATIONS_WANTED))
    agent_err = config.parent / "agent.stderr"
    agent = spawner.spawn(agent_argv(config, once=False), stderr=agent_err, cwd=agent_src)
    watcher = SinkWatcher(output_dir(config))
    try:
        deadline = time.monotonic() + 60
        while not (state_dir / "checkpoints.json").exists():  # written after the first scan, before reading
            if not agent.running() or time.monotonic() > deadline:
                raise RuntimeError(f"agent did not start: {agent_err.read_text(errors='replace')[-3000:]}")
            time.sleep(0.02)
        time.sleep(0.5)
        waited = settle()
        record = root / "writes"
        writer_out = root / "writer.out"
        writer_err = root / "writer.stderr"
        self_before, self_t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        load = Load()
        samples = [(time.monotonic(), cpu_seconds(agent.pid))]
        rss_max = memory_kib(agent.pid).get("VmRSS", 0)
        writer = spawner.spawn(
            [
                sys.executable,
                "-m",
                "tests.bench.writer",
                "--path",
                str(log),
                "--rate",
                str(rate),
                "--seconds",
                str(seconds),
                "--max-bytes",
                str(max_bytes),
                "--seed",
                str(seed),
                "--record",
                str(record),
            ],
            stdout=writer_out,
            stderr=writer_err,
        )
        profiler = None
        if profile_argv is not None:
            profiler = spawner.spawn([*profile_argv, str(agent.pid)], stdout=root / "py-spy.log", stderr=root / "py-spy.log")
        next_sample = time.monotonic() + SAMPLE_S
        while writer.running():
            watcher.poll()
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic(), cpu_seconds(agent.pid)))
                rss_max = max(rss_max, memory_kib(agent.pid).get("VmRSS", 0))
                next_sample += SAMPLE_S
            if not agent.running():
                raise RuntimeError(f"agent exited during the run: {agent_err.read_text(errors='replace')[-3000:]}")
            time.sleep(POLL_S)
        writer_usage = writer.wait(60)
        profiler_exit = profiler.wait(seconds + 60).returncode if profiler is not None else None
        if writer_usage.returncode != 0:
            raise RuntimeError(f"writer failed: {writer_err.read_text(errors='replace')[-3000:]}")
        summary = json.loads(writer_out.read_text().strip().splitlines()[-1])
        writer_end = time.monotonic()
        drain_deadline = writer_end + max(30.0, seconds)
        is_drained = False
        while time.monotonic() < drain_deadline:
            watcher.poll()
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic(), cpu_seconds(agent.pid)))
                rss_max = max(rss_max, memory_kib(agent.pid).get("VmRSS", 0))
                next_sample += SAMPLE_S
            if drained(state_dir, log):
                is_drained = True
                break
            time.sleep(POLL_S)
        drain_s = time.monotonic() - writer_end
        watcher.poll()
        samples.append((time.monotonic(), cpu_seconds(agent.pid)))
        hwm_live = memory_kib(agent.pid).get("VmHWM", 0)
        other_load = load.others(samples[-1][1] - samples[0][1] + writer_usage.cpu_s)
        self_after, self_t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        agent.terminate()
        agent_usage = agent.wait(120)
        watcher.poll()
    finally:
        if agent.running():
            agent.signal(9)
            agent.wait(30)
        watcher.close()
    if agent_usage.returncode != 0:
        raise RuntimeError(f"agent exited {agent_usage.returncode} after SIGTERM: {agent_err.read_text(errors='replace')[-3000:]}")
    started, ended = summary["started"], summary["ended"]
    window = ended - started
    agent_cpu = _interpolate(samples, ended) - _interpolate(samples, started)

    ids = record.with_suffix(".ids").read_bytes().split()
    times = array("d")
    with open(record.with_suffix(".times"), "rb") as fh:
        times.frombytes(fh.read())
    files = log_files(log)
    written_bytes = sum(p.stat().st_size for p in files)
    expected = expected_ids(files, kind, policy_file)
    seen = watcher.seen
    latencies = sorted(seen[i] - t for i, t in zip(ids, times, strict=True) if i in expected and i in seen)
    arrived = sum(1 for i in expected if i in seen)
    unexpected = sum(1 for i in seen if i not in expected)
    self_cpu = (self_after.ru_utime + self_after.ru_stime) - (self_before.ru_utime + self_before.ru_stime)
    result = {
        "rate": rate,
        "seconds": seconds,
        "config": kind,
        "writer": {
            **summary,
            "rotate_bytes": max_bytes,
            "log_files": len(files),
            "bytes": written_bytes,
            "mb_per_s": round(written_bytes / MB / window, 2) if window > 0 else None,
            "cpu_pct": round(100 * writer_usage.cpu_s / writer_usage.wall_s, 1),
        },
        "events_written": len(ids),
        "events_expected": len(expected),
        "events_arrived": arrived,
        "events_missing": len(expected) - arrived,
        "events_unexpected": unexpected,
        "events_duplicated": watcher.duplicates,
        "all_arrived": arrived == len(expected) and unexpected == 0,
        "drained": is_drained,
        "drain_s": round(drain_s, 3),
        "agent_cpu_s": round(agent_cpu, 3),
        "agent_cpu_pct": round(100 * agent_cpu / window, 2) if window > 0 else None,
        "agent_cpu_s_total": round(agent_usage.cpu_s, 3),
        "agent_max_rss_mb": round(agent_usage.max_rss_mb, 1),
        "agent_vmhwm_mb_before_stop": round(hwm_live / 1024, 1),
        "agent_vmrss_max_sampled_mb": round(rss_max / 1024, 1),
        "latency_ms": {
            "p50": round(1000 * _quantile(latencies, 0.50), 1),
            "p90": round(1000 * _quantile(latencies, 0.90), 1),
            "p99": round(1000 * _quantile(latencies, 0.99), 1),
            "max": round(1000 * latencies[-1], 1) if latencies else None,
            "min": round(1000 * latencies[0], 1) if latencies else None,
        },
        "batch_max_wait_ms": DEFAULT_MAX_WAIT_MS,
        "bench_process_cpu_pct": round(100 * self_cpu / (self_t1 - self_t0), 1),
        "other_load_cores": other_load,
        "waited_for_quiet_s": waited,
    }
    if profiler is not None:
        result["profiler_exit"] = profiler_exit
    shutil.rmtree(root / "log", ignore_errors=True)  # up to a GB at high rates: free the disk for the next rate
    shutil.rmtree(output_dir(config), ignore_errors=True)
    return result

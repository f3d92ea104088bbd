"""What the benchmark measures about processes and the machine, from /proc and wait4 (no extra dependency).

A child's CPU time (user + sys, every thread) and peak RSS come from `os.wait4` when it exits, so they are its
own, not the benchmark's; children are started by a small helper process (`tests.bench.spawner`) so that their
``ru_maxrss`` does not inherit the benchmark's. While a long-running child runs, `cpu_seconds` and `memory_kib` read
``/proc/<pid>/stat`` and ``/proc/<pid>/status`` (VmRSS, VmHWM) to measure a window of its life.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1_000_000  # throughput figures are decimal MB, as `zstd` and `dd` print them


@dataclass(slots=True)
class Usage:
    """One finished child process: wall time from start to exit, CPU seconds, peak RSS, exit code."""

    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mb: float
    returncode: int

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def as_dict(self) -> dict[str, float]:
        out = {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return {**out, "cpu_s": round(self.cpu_s, 3)}


class Proc:
    """A child started by the `Spawner`."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.pid = 0
        self.usage: Usage | None = None
        self.error: str | None = None
        self._started = threading.Event()
        self._exited = threading.Event()

    def _on_reply(self, reply: dict[str, Any]) -> None:
        if "pid" in reply:
            self.pid = reply["pid"]
            self._started.set()
        elif "error" in reply:
            self.error = reply["error"]
            self._started.set()
            self._exited.set()
        else:
            self.usage = Usage(reply["wall_s"], reply["user_s"], reply["sys_s"], reply["max_rss_kib"] / 1024, reply["exit"])
            self._exited.set()

    def _wait_started(self) -> None:
        if not self._started.wait(60):
            raise RuntimeError(f"the spawner did not start {self.argv[:3]}")
        if self.error is not None:
            raise RuntimeError(f"cannot start {self.argv[:3]}: {self.error}")

    def wait(self, timeout: float | None = None) -> Usage:
        """Block until the child exits (SIGKILL after `timeout` s); its wall time, rusage and exit code."""
        self._wait_started()
        if not self._exited.wait(timeout):
            self.signal(signal.SIGKILL)
            if not self._exited.wait(60):
                raise RuntimeError(f"{self.argv[:3]} did not exit after SIGKILL")
        assert self.usage is not None
        return self.usage

    def running(self) -> bool:
        return not self._exited.is_set()

    def signal(self, sig: int) -> None:
        self._wait_started()
        if not self._exited.is_set():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)


class Spawner:
    """Starts children through `tests.bench.spawner` (see there why) and collects their rusage."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.spawner"], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._lock = threading.Lock()
        self._next = 0
        self._procs: dict[int, Proc] = {}
        self._reader = threading.Thread(target=self._read, name="spawner-replies", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            reply = json.loads(line)
            with self._lock:
                proc = self._procs.get(reply["id"])
            if proc is not None:
                proc._on_reply(reply)

    def spawn(self, argv: list[str], *, stdout: Path | None = None, stderr: Path | None = None, cwd: Path = REPO, env: dict[str, str] | None = None) -> Proc:
        """Start `argv` (stdin from /dev/null; stdout/stderr to these files, or /dev/null)."""
        with self._lock:
            self._next += 1
            proc = Proc(argv)
            self._procs[self._next] = proc
            assert self._proc.stdin is not None
            self._proc.stdin.write(
                json.dumps(
                    {
                        "id": self._next,
                        "argv": argv,
                        "cwd": str(cwd),
                        "env": env,
                        "stdout": None if stdout is None else str(stdout),
                        "stderr": None if stderr is None else str(stderr),
                    }
                )
                + "\n"
            )
            self._proc.stdin.flush()
        proc._wait_started()
        return proc

    def run(self, argv: list[str], *, timeout: float, **kw: Any) -> Usage:
        """Run `argv` to completion and measure it."""
        return self.spawn(argv, **kw).wait(timeout)

    def close(self) -> None:
        """Kill what is still running, then stop the spawner."""
        with self._lock:
            live = [p for p in self._procs.values() if p.running() and p.pid]
        for p in live:
            p.signal(signal.SIGKILL)
        for p in live:
            p._exited.wait(30)
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(30)
        self._reader.join(10)

    def __enter__(self) -> Spawner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process, every thread (``/proc/<pid>/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        data = fh.read()
    fields = data[data.rindex(b")") + 2 :].split()  # after "pid (comm) ": fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS so far) of a running process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status", "rb") as fh:
        for line in fh:
            if line.startswith((b"VmRSS:", b"VmHWM:")):
                key, value = line.split(b":", 1)
                out[key.decode()] = int(value.split()[0])
    return out


def machine() -> dict[str, Any]:
    """The facts RESULTS.md records with every figure."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "nproc_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_total_mib": mem,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
    }


def git_commit(tree: Path = REPO) -> dict[str, Any]:
    """The commit of a source tree (short hash), and whether tracked files had local changes."""

    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True, timeout=30, check=False)
        return r.stdout.strip() if r.returncode == 0 else ""

    return {"commit": git("rev-parse", "--short", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def versions() -> dict[str, str]:
    import msgspec
    import zstandard

    out = {"msgspec": msgspec.__version__, "zstandard": zstandard.__version__}
    for tool in ("zstd", "cat"):
        try:
            r = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10, check=False)
            out[tool] = r.stdout.splitlines()[0].strip() if r.stdout else ""
        except OSError:
            out[tool] = "missing"
    return out


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages of the machine (``/proc/loadavg``), for the record."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


def _busy_seconds() -> float:
    """CPU time every core of the machine spent not idle, in seconds (``/proc/stat``)."""
    with open("/proc/stat", "rb") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # guest time is already counted in user/nice
    return (sum(fields) - idle - guest) / CLK_TCK


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Load:
    """What the rest of the machine did during a measurement: cores used by processes other than the measured
    children and the benchmark itself (the machine may be shared: figures taken under load are marked)."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.self0 = time.monotonic(), _busy_seconds(), _self_cpu()

    def others(self, children_cpu_s: float) -> float:
        wall = time.monotonic() - self.t0
        if wall <= 0:
            return 0.0
        busy = _busy_seconds() - self.busy0
        mine = children_cpu_s + _self_cpu() - self.self0
        return round(max(0.0, busy - mine) / wall, 3)


def wait_quiet(max_wait_s: float, threshold_cores: float = 0.25, window_s: float = 1.0) -> float:
    """Wait (up to `max_wait_s`) until the other processes use less than `threshold_cores` over `window_s`; the
    time waited. The benchmark's own idle children (none run between measurements) do not count."""
    start = time.monotonic()
    while True:
        load = Load()
        time.sleep(window_s)
        if load.others(0.0) < threshold_cores or time.monotonic() - start >= max_wait_s:
            return round(time.monotonic() - start, 1)


QUIET_MAX_WAIT_S = 30.0  # set from --quiet-wait


def settle() -> float:
    """Before a measurement: wait for the machine to be quiet (see `wait_quiet`); the seconds waited."""
    return wait_quiet(QUIET_MAX_WAIT_S) if QUIET_MAX_WAIT_S > 0 else 0.0

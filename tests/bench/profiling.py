"""``--profile``: the backlog scenario once more under py-spy, summarised as the top functions.

py-spy is not a dependency of the project (``pip install py-spy`` to use this). The profiled run is separate
from the measured ones: sampling slows the agent down a little, so its figures are not reported.

Two views of the same samples:
* self: the function on top of the stack (where the CPU is spent);
* inclusive: every function on the stack (what the time is spent under), agent code only.

Samples of threads waiting (an idle executor worker in ``queue.get``, the event loop in ``select``, a lock or
condition wait) are left out: py-spy counts a thread blocked on a futex as active.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from tests.bench.measure import Spawner

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# leaf frames that mean "waiting", not "working" (file, function)
_IDLE = {
    ("concurrent/futures/thread.py", "_worker"),
    ("selectors.py", "select"),
    ("threading.py", "wait"),
    ("threading.py", "_wait_for_tstate_lock"),
    ("threading.py", "join"),
    ("queue.py", "get"),
    ("watchdog/observers/inotify_c.py", "_check_inotify_fd"),  # poll() on the inotify descriptor
}


def available() -> str | None:
    return shutil.which("py-spy")


def _split_frame(frame: str) -> tuple[str, str, str]:
    m = _FRAME.match(frame)
    if m is None:
        return frame, "", ""
    func = m.group("func").rsplit(".", 1)[-1] if "." in m.group("func") else m.group("func")
    return m.group("func"), m.group("file"), func


def _is_idle(leaf: str) -> bool:
    _, file, short = _split_frame(leaf)
    return any(file.endswith(f) and short == name for f, name in _IDLE)


def summarize(raw: Path, top: int = 25) -> dict[str, Any]:
    """Top functions (self and inclusive) from py-spy's raw (collapsed stacks) output."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        thread = "?"
        if frames and frames[0].startswith("thread "):
            thread = re.sub(r"\(\d+\)", "", frames[0]).replace("thread", "").strip(" :")
            thread = re.sub(r"_\d+$", "_N", thread) or "?"  # executor workers asyncio_0, asyncio_1, ...: one class
            frames = frames[1:]
        if not frames:
            continue
        if _is_idle(frames[-1]):
            idle += n
            continue
        total += n
        threads[thread] += n
        names = [f"{func} ({file})" for func, file, _ in map(_split_frame, frames)]
        self_counts[names[-1]] += n
        for name in set(names):
            if "kube_audit_shipper/" in name:
                incl_counts[name] += n

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": f, "samples": c, "share": round(c / total, 4)} for f, c in counter.most_common(top)] if total else []

    return {
        "samples_working": total,
        "samples_idle_dropped": idle,
        "threads": {t: round(c / total, 4) for t, c in threads.most_common()} if total else {},
        "self": table(self_counts),
        "inclusive": table(incl_counts),
    }


def profile(spawner: Spawner, agent_argv: list[str], raw: Path, *, rate: int, timeout: float, cwd: Path) -> dict[str, Any]:
    """Run `agent_argv` under ``py-spy record`` (raw collapsed stacks to `raw`, thread names kept)."""
    spy = available()
    if spy is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy; it is not a dependency of the project)")
    argv = [spy, "record", "--rate", str(rate), "--format", "raw", "--threads", "--output", str(raw), "--", *agent_argv]
    log = raw.with_suffix(".log")
    usage = spawner.run(argv, stdout=log, stderr=log, timeout=timeout, cwd=cwd)
    if usage.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed (exit {usage.returncode}): {log.read_text(errors='replace')[-2000:] if log.exists() else ''}")
    return {
        "command": " ".join(argv[:8]) + " -- python -m kube_audit_shipper ... run --once",
        "rate_hz": rate,
        "wall_s": round(usage.wall_s, 3),
        **summarize(raw),
    }

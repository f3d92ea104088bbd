"""A small process that starts the benchmark's children and reports their resource use (``python -m
tests.bench.spawner``; one JSON request a line on stdin, one JSON reply a line on stdout).

Why not start them from the benchmark itself: Linux folds the RSS high-water mark of the process that forks into
the child's ``ru_maxrss`` at exec, and the benchmark grows (it holds the stage samples and every auditID of the
steady runs). Started from this process, which stays at a few MB, a child's ``ru_maxrss`` is its own peak.

Request: ``{"id": n, "argv": [...], "cwd": dir, "env": {...} | null, "stdout": path | null, "stderr": path | null}``
(null: /dev/null). Replies: ``{"id": n, "pid": p}`` once started (or ``{"id": n, "error": "..."}``), then
``{"id": n, "exit": code, "wall_s": s, "user_s": s, "sys_s": s, "max_rss_kib": k}`` when it has exited.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

_lock = threading.Lock()


def _reply(obj: dict[str, object]) -> None:
    with _lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def _reap(rid: int, proc: subprocess.Popen[bytes], started: float) -> None:
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # reaped here, not by Popen
    _reply({"id": rid, "exit": code, "wall_s": wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "max_rss_kib": ru.ru_maxrss})


def _open(path: str | None) -> int:
    if path is None:
        return os.open(os.devnull, os.O_WRONLY)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


def main() -> int:
    reapers: list[threading.Thread] = []
    for line in sys.stdin:
        req = json.loads(line)
        rid = req["id"]
        out, err = _open(req.get("stdout")), _open(req.get("stderr"))
        env = req.get("env")
        try:
            started = time.perf_counter()
            proc = subprocess.Popen(
                req["argv"], cwd=req.get("cwd"), env=None if env is None else {**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        except OSError as exc:
            _reply({"id": rid, "error": f"{type(exc).__name__}: {exc}"})
            continue
        finally:
            os.close(out)
            os.close(err)
        _reply({"id": rid, "pid": proc.pid})
        reaper = threading.Thread(target=_reap, args=(rid, proc, started), daemon=True)
        reaper.start()
        reapers.append(reaper)
    for reaper in reapers:  # the benchmark is gone: still reap what it started
        reaper.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())

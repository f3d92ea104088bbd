"""References, run in the same benchmark on the same files as the backlog: what reading, compressing and a naive
Python shipper cost on this machine, so the agent's figures read as ratios rather than absolute numbers.

* ``cat``: read every byte (to /dev/null): the floor of any shipper;
* ``zstd -3 -T1``: compress every byte once on one thread, what the file sink must at least do if it shipped
  everything (level 3 is the sink's default level);
* the naive msgspec loop (`tests.bench.naive`): decode every line into a dict and encode it again; and the same
  loop compressing its output as the file sink does (its default level), since the agent's figure includes that.

Each runs as its own process, measured with wait4. The page cache is warm for all of them (the files were just
written, and ``cat`` runs first), as it is for the agent.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from tests.bench.inputs import AuditLog
from tests.bench.measure import MB, Load, Spawner, Usage, settle

NAMES = ("cat", "zstd", "naive_msgspec", "naive_msgspec_zstd")


def sink_zstd_level() -> int:
    """The file sink's default ``compression_level``."""
    import msgspec

    from kube_audit_shipper.sinks.file.config import FileSinkConfig

    return int(next(f.default for f in msgspec.structs.fields(FileSinkConfig) if f.name == "compression_level"))


def _figures(usage: Usage, log: AuditLog, load: Load, waited: float) -> dict[str, Any]:
    return {
        **usage.as_dict(),
        "other_load_cores": load.others(usage.cpu_s),
        "waited_for_quiet_s": waited,
        "events": log.events,
        "mb_in": round(log.bytes / MB, 3),
        "mb_per_s": round(log.bytes / MB / usage.wall_s, 2),
        "events_per_s": round(log.events / usage.wall_s, 1),
        "mb_per_cpu_s": round(log.bytes / MB / usage.cpu_s, 2) if usage.cpu_s else None,
        "cpu_s_per_gb": round(usage.cpu_s / (log.bytes / 1e9), 3),
        "cpu_us_per_event": round(usage.cpu_s / log.events * 1e6, 2),
    }


def _checked(usage: Usage, what: str, stderr: Path) -> Usage:
    if usage.returncode != 0:
        tail = stderr.read_text(errors="replace")[-2000:] if stderr.exists() else ""
        raise RuntimeError(f"reference {what} failed with exit code {usage.returncode}: {tail}")
    return usage


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (a reference of the benchmark)")
    return path


def run_cat(spawner: Spawner, log: AuditLog, work: Path, timeout: float) -> dict[str, Any]:
    err = work / "cat.stderr"
    waited, load = settle(), Load()
    usage = _checked(spawner.run([_tool("cat"), *map(str, log.files)], stderr=err, timeout=timeout), "cat", err)
    return {"command": "cat FILES > /dev/null", **_figures(usage, log, load, waited)}


def run_zstd(spawner: Spawner, log: AuditLog, work: Path, timeout: float) -> dict[str, Any]:
    out, err = work / "zstd.out", work / "zstd.stderr"
    argv = [_tool("zstd"), "-3", "-T1", "-q", "-c", *map(str, log.files)]
    waited, load = settle(), Load()
    usage = _checked(spawner.run(argv, stdout=out, stderr=err, timeout=timeout), "zstd", err)
    figures = _figures(usage, log, load, waited)
    out_bytes = out.stat().st_size
    out.unlink()
    return {
        "command": "zstd -3 -T1 -c FILES > FILE",
        "bytes_out": out_bytes,
        "compression_ratio": round(log.bytes / out_bytes, 2) if out_bytes else None,
        **figures,
    }


def run_naive(spawner: Spawner, log: AuditLog, work: Path, timeout: float, zstd_level: int | None = None) -> dict[str, Any]:
    out, err = work / "naive.out", work / "naive.stderr"
    level = [] if zstd_level is None else ["--zstd", str(zstd_level)]
    argv = [sys.executable, "-m", "tests.bench.naive", *level, *map(str, log.files)]
    waited, load = settle(), Load()
    usage = _checked(spawner.run(argv, stdout=out, stderr=err, timeout=timeout), "naive msgspec loop", err)
    figures = _figures(usage, log, load, waited)
    result = json.loads(out.read_text().strip().splitlines()[-1])
    if result["events"] != log.events:
        raise RuntimeError(f"the naive loop saw {result['events']} events, expected {log.events}")
    return {"command": " ".join(["python -m tests.bench.naive", *level, "FILES"]), "bytes_out": result["bytes_out"], **figures}


def run_all(spawner: Spawner, log: AuditLog, work: Path, timeout: float, zstd_level: int) -> dict[str, dict[str, Any]]:
    """The references, `cat` first (it also warms the page cache for the others)."""
    return {
        "cat": run_cat(spawner, log, work, timeout),
        "zstd": run_zstd(spawner, log, work, timeout),
        "naive_msgspec": run_naive(spawner, log, work, timeout),
        "naive_msgspec_zstd": run_naive(spawner, log, work, timeout, zstd_level),
    }

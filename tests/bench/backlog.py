"""Backlog: a large audit log (rotated backups + the active file) already on disk, shipped from offset 0 to the zstd
file sink by ``python -m kube_audit_shipper run --once`` (exit 0 once every sink acknowledged everything), in each
configuration of `tests.bench.agentrun` (no policy; policy + enrichment; the same + detection).

Figures per run: wall time (process start to exit, interpreter start-up included), CPU seconds (user + sys, every
thread), peak RSS, events/s and MB/s of input, MB of input per CPU-second, CPU-seconds per GB and CPU µs per event,
and what arrived: the output is read back and its lines counted (every input event for ``no_policy``; what the policy
keeps otherwise, the same count with and without detection).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import zstandard

from tests.bench.agentrun import CONFIGS, agent_argv, agent_config, output_bytes, output_dir
from tests.bench.inputs import AuditLog
from tests.bench.measure import MB, Load, Spawner, Usage, settle


def count_output_lines(out_dir: Path) -> int:
    n = 0
    for p in sorted(out_dir.iterdir()):
        if ".ndjson.zst" not in p.name:
            continue
        with open(p, "rb") as fh:
            reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
            while block := reader.read(1 << 22):
                n += block.count(b"\n")
    return n


def _figures(usage: Usage, log: AuditLog) -> dict[str, Any]:
    return {
        **usage.as_dict(),
        "events": log.events,
        "mb_in": round(log.bytes / MB, 3),
        "events_per_s": round(log.events / usage.wall_s, 1),
        "mb_per_s": round(log.bytes / MB / usage.wall_s, 2),
        "mb_per_cpu_s": round(log.bytes / MB / usage.cpu_s, 2) if usage.cpu_s else None,
        "cpu_s_per_gb": round(usage.cpu_s / (log.bytes / 1e9), 3),
        "cpu_us_per_event": round(usage.cpu_s / log.events * 1e6, 2),
        "cpu_cores_used": round(usage.cpu_s / usage.wall_s, 3),
    }


def fixed_cost(spawner: Spawner, work: Path, agent_src: Path, timeout: float, kind: str = "policy") -> dict[str, Any]:
    """``run --once`` over an empty log: interpreter start-up, imports, state and sink set-up (loading the policy and
    the rules), shutdown."""
    log = work / "empty" / "audit.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")
    config = agent_config(work, f"backlog-empty-{kind}", log, kind, backfill=True)
    stderr = config.parent / "agent.stderr"
    settle()
    usage = spawner.run(agent_argv(config, once=True), stderr=stderr, timeout=timeout, cwd=agent_src)
    if usage.returncode != 0:
        raise RuntimeError(f"agent (empty log) exited {usage.returncode}: {stderr.read_text(errors='replace')[-3000:]}")
    return usage.as_dict()


def run_one(spawner: Spawner, log: AuditLog, work: Path, kind: str, run: int, timeout: float, agent_src: Path) -> tuple[Path, dict[str, Any]]:
    """One ``run --once`` of the agent over `log` with config `kind`; its config path and figures."""
    config = agent_config(work, f"backlog-{kind}-{run}", log.path, kind, backfill=True)
    stderr = config.parent / "agent.stderr"
    waited, load = settle(), Load()
    usage = spawner.run(agent_argv(config, once=True), stderr=stderr, timeout=timeout, cwd=agent_src)
    other_load = load.others(usage.cpu_s)
    if usage.returncode != 0:
        raise RuntimeError(f"agent ({kind}) exited {usage.returncode}: {stderr.read_text(errors='replace')[-3000:]}")
    out = output_dir(config)
    shipped = count_output_lines(out)
    if kind == "no_policy" and shipped != log.events:
        raise RuntimeError(f"agent (no_policy) shipped {shipped} events, {log.events} were written")
    if not 0 < shipped <= log.events:
        raise RuntimeError(f"agent ({kind}) shipped {shipped} events of {log.events}")
    figures = {
        **_figures(usage, log),
        "other_load_cores": other_load,
        "waited_for_quiet_s": waited,
        "events_shipped": shipped,
        "bytes_out": output_bytes(out),
        "stderr_bytes": stderr.stat().st_size,
    }
    return config, figures


def run_backlog(
    spawner: Spawner, log: AuditLog, work: Path, *, agent_src: Path, repeat: int, timeout: float, kinds: tuple[str, ...] = CONFIGS
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Every config, `repeat` times each (interleaved); the run with the median wall time is reported."""
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    configs: dict[str, Path] = {}
    for i in range(max(1, repeat)):
        for kind in kinds:
            configs[kind], figures = run_one(spawner, log, work, kind, i, timeout, agent_src)
            runs[kind].append(figures)
            for p in output_dir(configs[kind]).iterdir():  # the output is counted: free the disk for the next run
                p.unlink()
    out: dict[str, Any] = {}
    for kind, all_figures in runs.items():
        walls = [f["wall_s"] for f in all_figures]
        median = sorted(all_figures, key=lambda f: f["wall_s"])[len(all_figures) // 2]
        out[kind] = {
            **median,
            "runs": len(all_figures),
            "wall_s_all": walls,
            "wall_s_spread": round((max(walls) - min(walls)) / statistics.median(walls), 4) if len(walls) > 1 else 0.0,
        }
    return configs, out

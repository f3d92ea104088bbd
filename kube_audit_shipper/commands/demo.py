"""`demo`: a fake kube-apiserver writes and rotates an audit log; the real pipeline ships it.

Everything runs for real: the same Agent as `run`, reading files in a temporary directory, rotated by
rename (and gzip of older backups) while it reads, into a zstd file sink. Ends with a summary.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

from kube_audit_shipper.app import Agent
from kube_audit_shipper.config import parse
from kube_audit_shipper.demo.apiserver import RotatingAuditWriter
from kube_audit_shipper.demo.events import AuditEventGenerator


def _writer(path: Path, events: int, rate: float, seed: int, max_bytes: int, progress: dict[str, int], failed: list[BaseException]) -> None:
    gen = AuditEventGenerator(seed=seed)
    started = time.monotonic()
    try:
        with RotatingAuditWriter(path, max_bytes=max_bytes, compress=True) as writer:
            for i, line in enumerate(gen.lines(events), 1):
                writer.write(line)
                progress["written"] = i
                progress["bytes"] += len(line) + 1
                if rate > 0:
                    ahead = i / rate - (time.monotonic() - started)
                    if ahead > 0.005:
                        time.sleep(ahead)
    except BaseException as exc:  # noqa: BLE001  # reported by the demo, never silent
        failed.append(exc)
    finally:
        progress["done"] = 1


def _size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


async def _run(root: Path, events: int, rate: float, seed: int, out: TextIO) -> int:
    log = root / "log" / "audit.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cfg = parse(
        {
            "state_dir": str(root / "state"),
            "node_name": "demo-node",
            "input": {"paths": [str(log)], "poll_interval_ms": 200},
            "batch": {"max_events": 2048, "max_bytes": 2 << 20, "max_wait_ms": 200},
            "sinks": [{"name": "archive", "type": "file", "path": str(root / "out"), "compression": "zstd"}],
            "metrics": {"listen": None},
        }
    )
    agent = Agent(cfg)
    progress = {"written": 0, "bytes": 0, "done": 0}
    failed: list[BaseException] = []
    max_bytes = 4 << 20  # small, so the demo shows several rotations
    writer = threading.Thread(target=_writer, args=(log, events, rate, seed, max_bytes, progress, failed), daemon=True)
    ready = asyncio.Event()
    started = time.monotonic()
    task = asyncio.get_running_loop().create_task(agent.run(on_ready=lambda _a: ready.set()))
    await ready.wait()
    writer.start()
    out.write(f"demo: fake kube-apiserver writing {events} audit events to {log} (rotating every {max_bytes >> 20} MiB, gzipping backups)\n")
    state = agent.metrics_state()
    last_print = 0.0
    while not task.done():
        state = agent.metrics_state()
        handled = state.shipped["archive"][0] + sum(state.deadlettered.values()) + sum(state.dropped.values())
        if time.monotonic() - last_print >= 0.5:
            last_print = time.monotonic()
            out.write(f"  written {progress['written']:>9}   shipped {state.shipped['archive'][0]:>9}   in memory {state.inflight_bytes >> 10:>6} KiB\n")
            out.flush()
        if progress["done"] and handled >= progress["written"]:
            break
        await asyncio.sleep(0.05)
    agent.request_stop()
    rc = await task
    elapsed = time.monotonic() - started
    writer.join()
    if failed:
        out.write(f"demo: the writer failed: {failed[0]!r}\n")
        return 1
    state = agent.metrics_state()
    outputs = sorted((root / "out").glob("*.ndjson.zst"))
    logs = sorted(log.parent.iterdir())
    shipped_events, shipped_bytes = state.shipped["archive"]
    out_bytes = _size(outputs)
    dead = sum(state.deadlettered.values())
    out.write(
        "\nsummary\n"
        f"  events written      {progress['written']}\n"
        f"  events read         {state.events_read}\n"
        f"  events shipped      {shipped_events}\n"
        f"  dead-lettered       {dead}\n"
        f"  bytes in            {progress['bytes']:,} (audit log and {len(logs) - 1} rotated backups)\n"
        f"  bytes out           {out_bytes:,} in {len(outputs)} zstd file(s)\n"
        f"  compression ratio   {shipped_bytes / out_bytes if out_bytes else 0:.1f}x\n"
        f"  throughput          {shipped_events / elapsed:,.0f} events/s over {elapsed:.1f} s\n"
        f"  output              {root / 'out'}\n"
        f"  look at it:         zstd -dc {root / 'out'}/*.zst | head -1\n"
    )
    ok = rc == 0 and shipped_events + dead == progress["written"]
    if not ok:
        out.write("demo: not every written event was accounted for\n")
    return 0 if ok else 1


def run_demo(*, events: int, rate: float, directory: str | None, seed: int, out: TextIO) -> int:
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="kube-audit-shipper-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run(root, events, rate, seed, out))

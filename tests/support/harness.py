"""Run the real Agent in-process against real files, and read what the file sink wrote."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import zstandard

from kube_audit_shipper.app import Agent
from kube_audit_shipper.config import Config, parse


def make_config(tmp: Path, *, paths: list[str] | None = None, sink: dict[str, Any] | None = None, **top: Any) -> Config:
    data: dict[str, Any] = {
        "state_dir": str(tmp / "state"),
        "input": {"paths": paths or [str(tmp / "log" / "audit.log")], "poll_interval_ms": 50, "rescan_interval_ms": 200},
        "batch": {"max_events": 100, "max_bytes": 1 << 20, "max_wait_ms": 50},
        "sinks": [{"name": "archive", "type": "file", "path": str(tmp / "out"), **(sink or {})}],
        "checkpoint": {"flush_interval_ms": 50},
        "metrics": {"listen": None},
    }
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse(data)


def run_once(cfg: Config, **kw: Any) -> Agent:
    agent = Agent(cfg, **kw)
    assert asyncio.run(agent.run(once=True)) == 0
    return agent


def sink_lines(out_dir: Path, *, include_tmp: bool = False) -> list[bytes]:
    """Every line the file sink wrote, in file-name (= time) order."""
    lines: list[bytes] = []
    if not out_dir.exists():
        return lines
    files = sorted(p for p in out_dir.iterdir() if include_tmp or not p.name.startswith("."))
    for p in files:
        data = p.read_bytes()
        if p.name.endswith(".zst") or p.name.endswith(".zst.tmp"):
            data = _zstd_all(data)
        lines.extend(data.splitlines())
    return lines


def _zstd_all(data: bytes) -> bytes:
    out = []
    while data:
        d = zstandard.ZstdDecompressor().decompressobj()
        try:
            out.append(d.decompress(data))
        except zstandard.ZstdError:
            break
        if not d.eof:
            break
        data = d.unused_data
    return b"".join(out)


def append(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fh.write(b"".join(line + b"\n" for line in lines))


def rotate(path: Path, stamp: str, *, gz: bool = False) -> Path:
    """Rename rotation as kube-apiserver does it; optionally gzip the backup and remove it."""
    stem, ext = os.path.splitext(path.name)
    backup = path.with_name(f"{stem}-{stamp}{ext}")
    os.rename(path, backup)
    path.touch()
    if gz:
        import gzip

        with open(backup, "rb") as src, gzip.open(str(backup) + ".gz", "wb") as dst:
            dst.write(src.read())
        os.unlink(backup)
        backup = Path(str(backup) + ".gz")
    return backup


class Running:
    """An Agent running in the test's event loop; `await until(...)` (tests/support/wait.py), then `await stop()`."""

    def __init__(self, cfg: Config, **kw: Any) -> None:
        self.agent = Agent(cfg, **kw)
        self.task: asyncio.Task[int] | None = None

    async def __aenter__(self) -> Running:
        ready = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.agent.run(on_ready=lambda _a: ready.set()))
        await asyncio.wait([self.task, asyncio.ensure_future(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            self.task.result()
        return self

    def agent_server_port(self) -> int:
        assert self.agent.server is not None
        return self.agent.server.port

    async def stop(self) -> int:
        assert self.task is not None
        self.agent.request_stop()
        return await asyncio.wait_for(self.task, 30)

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None and not self.task.done():
            await self.stop()

"""`status`: per file on disk, its identity, checkpoint offset, size and bytes behind."""

from __future__ import annotations

import json
import os
from typing import Any, TextIO

from kube_audit_shipper.checkpoint.files import FileRecords
from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.checkpoint.store import CheckpointStore
from kube_audit_shipper.config import Config
from kube_audit_shipper.source.discover import discover
from kube_audit_shipper.source.identity import is_gzip_fd, read_head


def collect_status(cfg: Config) -> list[dict[str, Any]]:
    """Per file on disk, matched to its saved record exactly as the agent matches it when it starts."""
    records = FileRecords(CheckpointStore(cfg.state_dir).load(), ledger=Ledger([]), forget_after_s=cfg.checkpoint.forget_after_s, lost_grace_s=0)
    rows: list[dict[str, Any]] = []
    for fid, f in enumerate(discover(cfg.input.paths, cfg.input.exclude)):
        try:
            fd = os.open(f.path, os.O_RDONLY)
        except OSError as exc:
            rows.append({"path": f.path, "error": exc.strerror})
            continue
        try:
            gz = is_gzip_fd(fd)
            head = read_head(fd, gz)
        finally:
            os.close(fd)
        entry = records.lookup(f.stat, head)
        if entry is not None:  # held by this file: not matched to another one
            records.opened(fid, f.stat, head, gz, entry, entry.offset, entry.complete)
        offset = entry.offset if entry is not None else None
        complete = bool(entry is not None and entry.complete)
        behind = 0 if complete else (None if gz else f.stat.size - (offset or 0))
        rows.append(
            {
                "path": f.path,
                "role": "active" if f.rank[0] == 1 else "rotated",
                "dev": f.stat.dev,
                "inode": f.stat.ino,
                "fingerprint": entry.fp if entry is not None else None,
                "gzip": gz,
                "size": f.stat.size,
                "checkpoint": offset,
                "complete": complete,
                "bytes_behind": behind,
            }
        )
    return rows


def print_status(cfg: Config, *, as_json: bool, out: TextIO) -> int:
    rows = collect_status(cfg)
    if as_json:
        out.write(json.dumps({"state_dir": cfg.state_dir, "files": rows}, indent=2) + "\n")
        return 0
    if not rows:
        out.write("no input files found for " + ", ".join(cfg.input.paths) + "\n")
        return 0
    out.write(f"{'PATH':<60} {'IDENTITY':<24} {'CHECKPOINT':>12} {'SIZE':>12} {'BEHIND':>12}\n")
    for r in rows:
        if "error" in r:
            out.write(f"{r['path']:<60} error: {r['error']}\n")
            continue
        ident = f"{r['dev']}:{r['inode']}" + (" gz" if r["gzip"] else "")
        cp = "-" if r["checkpoint"] is None else ("done" if r["complete"] else str(r["checkpoint"]))
        behind = "?" if r["bytes_behind"] is None else str(r["bytes_behind"])
        out.write(f"{r['path']:<60} {ident:<24} {cp:>12} {r['size']:>12} {behind:>12}\n")
    return 0

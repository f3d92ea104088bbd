"""Fluent Bit on the same backlog, in the same run: the peer the agent is measured against (issue 17).

Given a Fluent Bit binary (``FLUENT_BIT=/path/to/fluent-bit``; tests/bench/RESULTS.md says how the one measured was
built), the backlog scenario runs it once per input mix on the very files the agent ships: ``tail`` (every file of
the rotated log, from its head, ``exit_on_eof``: it stops after the last file's end) → the ``json`` parser → the
``file`` output in ``plain`` format (one JSON object a line: every event decoded and encoded again, no compression,
no policy, no enrichment). Its output is read back and its lines counted: every event must arrive.

Settings beyond Fluent Bit's defaults, each because the comparison needs it: ``buffer_chunk_size 1M`` and
``buffer_max_size 8M`` (the defaults, 32k, drop audit events longer than 32 KiB, and the generated logs hold a few of
several MB), ``skip_long_lines on`` (never stop reading a file), ``grace 1`` (the default waits up to 5 s at exit
for nothing), ``log_level warn``. ``flush`` stays at its default (1 s) and so does everything else (one output
worker, memory buffering).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.bench.inputs import AuditLog
from tests.bench.measure import MB, Load, Spawner, settle

ENV = "FLUENT_BIT"
_PARSERS = """[PARSER]
    name   json
    format json
"""
_CONFIG = """[SERVICE]
    flush        1
    grace        1
    log_level    warn
    parsers_file {parsers}

[INPUT]
    name              tail
    path              {glob}
    read_from_head    true
    exit_on_eof       true
    parser            json
    buffer_chunk_size 1M
    buffer_max_size   8M
    skip_long_lines   on

[OUTPUT]
    name   file
    match  *
    path   {out}
    file   out.ndjson
    format plain
"""


def binary() -> str | None:
    """The Fluent Bit binary named by ``$FLUENT_BIT``, or None (the comparison is then left out)."""
    path = os.environ.get(ENV, "").strip()
    if not path:
        return None
    found = shutil.which(path) or (path if os.access(path, os.X_OK) else None)
    if found is None:
        raise RuntimeError(f"${ENV}={path!r} is not an executable file")
    return found


def version(path: str) -> str:
    r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return r.stdout.splitlines()[0].strip() if r.stdout else "unknown"


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            n += block.count(b"\n")
    return n


def run(spawner: Spawner, fluent_bit: str, log: AuditLog, work: Path, timeout: float) -> dict[str, Any]:
    """One Fluent Bit run over every file of `log`; its figures, with the events that arrived."""
    root = work / "fluent-bit"
    shutil.rmtree(root, ignore_errors=True)
    out = root / "out"
    out.mkdir(parents=True)
    parsers = root / "parsers.conf"
    parsers.write_text(_PARSERS)
    config = root / "fluent-bit.conf"
    # The backups are named audit-<timestamp>.log next to audit.log: one glob holds them all.
    glob = str(log.path.parent / (log.path.stem + "*" + log.path.suffix))
    config.write_text(_CONFIG.format(parsers=parsers, glob=glob, out=out))
    stderr = root / "fluent-bit.stderr"
    waited, load = settle(), Load()
    usage = spawner.run([fluent_bit, "-c", str(config)], stdout=stderr, stderr=stderr, timeout=timeout)
    other_load = load.others(usage.cpu_s)
    if usage.returncode != 0:
        raise RuntimeError(f"fluent-bit exited {usage.returncode}: {stderr.read_text(errors='replace')[-3000:]}")
    output = out / "out.ndjson"
    shipped = _count_lines(output) if output.exists() else 0
    bytes_out = output.stat().st_size if output.exists() else 0
    if shipped != log.events:
        raise RuntimeError(f"fluent-bit shipped {shipped} events, {log.events} were written: {stderr.read_text(errors='replace')[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)  # free the disk for the next run
    return {
        **usage.as_dict(),
        "command": f"fluent-bit -c {config.name} (tail -> json -> file, plain)",
        "other_load_cores": other_load,
        "waited_for_quiet_s": waited,
        "events": log.events,
        "events_shipped": shipped,
        "bytes_out": bytes_out,
        "mb_in": round(log.bytes / MB, 3),
        "events_per_s": round(log.events / usage.wall_s, 1),
        "mb_per_s": round(log.bytes / MB / usage.wall_s, 2),
        "mb_per_cpu_s": round(log.bytes / MB / usage.cpu_s, 2) if usage.cpu_s else None,
        "cpu_s_per_gb": round(usage.cpu_s / (log.bytes / 1e9), 3),
        "cpu_us_per_event": round(usage.cpu_s / log.events * 1e6, 2),
    }

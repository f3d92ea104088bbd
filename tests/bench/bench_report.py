"""Benchmark: `kube-audit-shipper report` over a generated gigabyte of audit log: speed and peak memory.

Run: `python -m tests.bench.bench_report [--size-mb 1024] [--dir D] [--keep] [--only plain,zstd,policy]`.

Writes `--size-mb` of realistic events (the demo's `AuditEventGenerator`, seed 1, events spread over a day) to
`audit.log`, and for the `zstd` case the same events as the file sink writes them (one zstd frame per 4096-event
batch, level 3). Each case runs the report command in a fresh child process (one core, nothing else in it) and
prints wall time, CPU time, input MB/s (of the uncompressed log) per wall second and per CPU second (the figure
that does not depend on what else the machine runs) and the child's peak RSS (`ru_maxrss`). The detection
engine runs in every case (as `report` runs it), when `kube_audit_shipper.process.detect` is installed:

* plain: the plain log;
* zstd: the file sink's `.ndjson.zst` (decompression included);
* policy: the plain log with `--policy` (the sample policy: every event also replayed through `policy check`).

Targets (issue 16): ≥ 50 MB/s on one core and ≤ 200 MB peak RSS for the plain case. It asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import zstandard

from kube_audit_shipper.demo.events import AuditEventGenerator, EventMix

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "config" / "policy" / "audit-policy.yaml"
CHILD = """
import argparse, resource, sys
from kube_audit_shipper.commands import report
parser = argparse.ArgumentParser()
report.add_arguments(parser)
code = report.run(parser.parse_args(sys.argv[1:]), sys.stdout)
print("peak_rss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def write_inputs(folder: Path, size_mb: int, zstd: bool) -> tuple[Path, Path | None, int, int]:
    """(plain log, zstd log or None, events, bytes)."""
    plain = folder / "audit.log"
    packed = folder / "audit-20261122T000000.000000Z-0001.ndjson.zst" if zstd else None
    # a day of traffic whatever the size: trends of minutes, not of seconds
    events_per_day = size_mb * 1024 * 1024 / 1750
    generator = AuditEventGenerator(1, start_time=datetime(2026, 11, 22, tzinfo=UTC), mix=EventMix(events_per_second=events_per_day / 86_400))
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True)
    events = written = 0
    batch: list[bytes] = []
    with plain.open("wb") as out, packed.open("wb") if packed else open(os.devnull, "wb") as zout:
        for line in generator.write_bytes(size_mb * 1024 * 1024):
            out.write(line + b"\n")
            events += 1
            written += len(line) + 1
            if packed:
                batch.append(line)
                if len(batch) == 4096:
                    zout.write(compressor.compress(b"\n".join(batch) + b"\n"))
                    batch.clear()
        if packed and batch:
            zout.write(compressor.compress(b"\n".join(batch) + b"\n"))
    return plain, packed, events, written


def run_case(name: str, args: list[str], input_bytes: int, out_dir: Path) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args, "-o", str(out_dir / f"{name}.html"), "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_kb = int(done.stderr.rsplit("peak_rss_kb", 1)[1].split()[0])  # the child's own ru_maxrss
    return {"wall_s": wall, "cpu_s": cpu, "mb_per_s": input_bytes / 1e6 / wall, "peak_rss_mb": peak_kb / 1024, "output": done.stdout.strip()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the generated logs and reports")
    parser.add_argument("--only", default="plain,zstd,policy", help="comma-separated cases")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.only.split(",") if c.strip()]
    folder = args.dir or Path(tempfile.mkdtemp(prefix="bench-report-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        plain, packed, events, size = write_inputs(folder, args.size_mb, "zstd" in cases)
        print(
            f"input: {events:,} events, {size / 1e6:,.0f} MB plain"
            + (f", {packed.stat().st_size / 1e6:,.0f} MB zstd" if packed else "")
            + f" ({time.perf_counter() - started:.0f} s to write)"
        )
        print(f"{'case':<8} {'wall s':>8} {'cpu s':>8} {'MB/s':>8} {'MB/cpu-s':>9} {'peak RSS MB':>12}")
        for case in cases:
            if case == "plain":
                result = run_case(case, [str(plain)], size, folder)
            elif case == "zstd":
                assert packed is not None
                result = run_case(case, [str(packed)], size, folder)
            elif case == "policy":
                result = run_case(case, [str(plain), "--policy", str(POLICY)], size, folder)
            else:
                raise SystemExit(f"unknown case {case!r}")
            per_cpu = size / 1e6 / result["cpu_s"]
            print(
                f"{case:<8} {result['wall_s']:>8.1f} {result['cpu_s']:>8.1f} {result['mb_per_s']:>8.1f} {per_cpu:>9.1f} {result['peak_rss_mb']:>12.0f}   {result['output']}"
            )
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

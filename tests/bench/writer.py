"""The kube-apiserver of the steady scenario: appends generated events at a fixed rate for a fixed time, rotating
as lumberjack does, and records when each line was written (``python -m tests.bench.writer ...``).

Events and rotation are the demo's (`AuditEventGenerator`, `RotatingAuditWriter`, the same as
``python -m kube_audit_shipper.demo.apiserver``); the event stream is deterministic given the seed (its timestamps are spaced
for the rate). Nothing is added to the events: the write time of line i (CLOCK_MONOTONIC, shared by every
process on the machine, taken right after its ``write`` returned) goes to ``--record``: the auditIDs, one a
line, in ``<record>.ids``, and the times as float64 in ``<record>.times``. Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from array import array
from pathlib import Path

from kube_audit_shipper.demo.apiserver import OversizeLineError, RotatingAuditWriter
from kube_audit_shipper.demo.events import AuditEventGenerator, EventMix


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.writer", description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--path", required=True)
    ap.add_argument("--rate", type=float, required=True, help="events per second")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--max-bytes", type=int, required=True, help="rotate before the file would exceed this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--record", required=True, help="path prefix of the write-time record")
    args = ap.parse_args(argv)
    n = int(args.rate * args.seconds)
    gen = AuditEventGenerator(args.seed, mix=EventMix(events_per_second=args.rate))
    ids: list[str] = []
    times = array("d")
    dropped = 0
    max_lag = 0.0
    clock, sleep = time.monotonic, time.sleep
    with RotatingAuditWriter(args.path, max_bytes=args.max_bytes) as writer:
        write = writer.write
        t0 = clock()
        for i, (audit_id, line) in enumerate(gen.records(n)):
            due = t0 + i / args.rate
            ahead = due - clock()
            if ahead > 0.001:  # writes come in bursts of about a millisecond; lumberjack writes each line at once
                sleep(ahead)
            try:
                write(line)
            except OversizeLineError:  # the apiserver drops an event larger than the file size
                dropped += 1
                continue
            t = clock()
            if t - due > max_lag:
                max_lag = t - due
            ids.append(audit_id)
            times.append(t)
        t1 = clock()
        rotations = writer.rotations
    record = Path(args.record)
    record.with_suffix(".ids").write_text("\n".join(ids) + "\n")
    with open(record.with_suffix(".times"), "wb") as fh:
        times.tofile(fh)
    print(
        json.dumps(
            {
                "events": len(ids),
                "dropped": dropped,
                "rotations": rotations,
                "started": t0,
                "ended": t1,
                "achieved_rate": round(len(ids) / (t1 - t0), 1) if t1 > t0 else 0.0,
                "max_lag_s": round(max_lag, 4),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

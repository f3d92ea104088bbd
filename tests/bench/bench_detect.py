"""Benchmark: the detection stage (the whole built-in rule pack) alone, on one core.

Run: `python -m tests.bench.bench_detect [--events N] [--repeat R] [--profile]`. For each input mix it prints
events/s and µs/event (CPU time of the process: one core) of:

* decode: `decode_event(line)` alone (what the pipeline already pays before detection, for comparison);
* detect: `DetectionEngine.evaluate(event)` on events decoded beforehand: the cost the stage adds;
* decode+detect: both, as `kube-audit-shipper detect` runs.

Mixes: `demo` (the demo generator's realistic control-plane traffic: leases, watches, status patches, exec,
failures, humans from public addresses) and `real` (the 330 real events of tests/data/real-audit, cycled,
each copy with its own auditID: many pod creates, RBAC changes, exec, anonymous access: far more rule hits
than a real cluster). Each figure is the best of `--repeat` runs, each on a fresh engine. `--profile` prints
the cProfile top of one detect run per mix. Target (issue 15): >= 100k events/s for detect on a typical mix.
It asserts nothing about timings; it only prints them.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kube_audit_shipper.demo.events import AuditEventGenerator
from kube_audit_shipper.process.detect.build import load_catalog
from kube_audit_shipper.process.detect.config import DetectConfig
from kube_audit_shipper.process.detect.engine import DetectionEngine
from kube_audit_shipper.process.policy.event import RecordedEvent, decode_event
from tests.support.corpus import numbered_lines


def demo_mix(count: int) -> list[bytes]:
    return list(AuditEventGenerator(1).lines(count))


def real_mix(count: int) -> list[bytes]:
    return numbered_lines(count, prefix="bench")


def best_of(repeat: int, run: Callable[[], int]) -> tuple[float, int]:
    """(best CPU seconds of this process, the run's result). CPU time, not wall time: the figure is the cost on
    one core, and other processes sharing the machine do not inflate it."""
    best = float("inf")
    result = 0
    for _ in range(repeat):
        started = time.process_time()
        result = run()
        best = min(best, time.process_time() - started)
    return best, result


def report(name: str, count: int, seconds: float, extra: str = "") -> None:
    print(f"  {name:<16} {count / seconds:>10,.0f} events/s {seconds / count * 1e6:>8.2f} µs/event  {extra}")


def bench_mix(label: str, lines: list[bytes], repeat: int, profile: bool) -> None:
    pack = load_catalog(DetectConfig()).enabled
    total = sum(map(len, lines))
    print(f"{label}: {len(lines):,} events, mean {total / len(lines):.0f} B/event, {len(pack)} rules")
    decode_s, _ = best_of(repeat, lambda: sum(1 for raw in lines if decode_event(raw) is not None))
    report("decode", len(lines), decode_s)
    events: list[RecordedEvent] = [decode_event(raw) for raw in lines]
    engines: list[DetectionEngine] = []

    def detect() -> int:
        engine = DetectionEngine(pack)
        engines.append(engine)
        evaluate = engine.evaluate
        return sum(len(evaluate(event)) for event in events)

    detect_s, alerts = best_of(repeat, detect)
    stats = engines[-1].stats
    rules = ", ".join(f"{rule} {count}" for rule, count in stats.alerts.most_common(6))
    report("detect", len(lines), detect_s, f"{alerts} alerts ({rules}); errors {sum(stats.errors.values())}")

    def both() -> int:
        engine = DetectionEngine(pack)
        evaluate = engine.evaluate
        return sum(len(evaluate(decode_event(raw))) for raw in lines)

    both_s, _ = best_of(repeat, both)
    report("decode+detect", len(lines), both_s, f"detect = {detect_s / both_s:.0%} of decode+detect")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        detect()
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
        print(text.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per mix (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is printed (default 3)")
    parser.add_argument("--profile", action="store_true", help="print the cProfile top of a detect run per mix")
    parser.add_argument("--only", choices=["demo", "real"], help="one mix only")
    args = parser.parse_args()
    for label, build in (("demo", demo_mix), ("real", real_mix)):
        if args.only in (None, label):
            bench_mix(label, build(args.events), args.repeat, args.profile)


if __name__ == "__main__":
    main()

"""Worker processes shape reads exactly as the agent's own process does (process/workers.py), and the stage hands
reads on in the order they came in whichever way each was processed (process/stage.py).

Real worker processes (spawn), the real corpus of audit events plus poison lines, the sample policy with
redaction and enrichment, the built-in detection rules.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.model import Chunk, Lines
from kube_audit_shipper.process.budget import ByteBudget
from kube_audit_shipper.process.config import ProcessingConfig
from kube_audit_shipper.process.detect.build import build_engine
from kube_audit_shipper.process.detect.config import DetectConfig
from kube_audit_shipper.process.enrich.config import EnrichConfig
from kube_audit_shipper.process.lines import LineProcessor
from kube_audit_shipper.process.policy.load import load_policy
from kube_audit_shipper.process.stage import Stage
from kube_audit_shipper.process.transform import Transform, build_transform
from kube_audit_shipper.process.workers import ShapePool, ShapeSpec
from tests.support.corpus import REAL_AUDIT

REPO = Path(__file__).resolve().parents[3]
POLICY = REPO / "config" / "policy" / "audit-policy.yaml"
ENRICH = EnrichConfig(static_fields={"cluster_id": "c1"})
POISON = [
    b"not json at all",
    b'{"kind":"Event","auditID":"deep","requestObject":' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"kind":"Event","auditID":"bad-utf8","user":{"username":"\xff\xfe"}}',
    b"[1,2,3]",
    b"   ",
    b'{"kind":"Event","auditID":"odd","requestURI":"/api/v1/namespaces/x/pods/y/exec?command=%ZZ","verb":"create",'
    b'"objectRef":{"resource":"pods","subresource":"exec","namespace":"x","name":"y"},"stage":"ResponseStarted",'
    b'"stageTimestamp":"2026-12-05T10:00:00.000000Z","user":{"username":"alice"},"sourceIPs":["203.0.113.9"]}',
]


def corpus_lines() -> list[bytes]:
    lines = [x for p in sorted(REAL_AUDIT.glob("*.jsonl")) for x in p.read_bytes().splitlines() if x.strip()]
    mixed: list[bytes] = []
    for i, x in enumerate(lines):
        mixed.append(x)
        if i % 50 == 0:
            mixed.append(POISON[(i // 50) % len(POISON)])
    return mixed


def reads_of(lines: list[bytes], per_read: int) -> list[Lines]:
    reads, offset = [], 0
    for i in range(0, len(lines), per_read):
        part = lines[i : i + per_read]
        ends, pos = [], offset
        for x in part:
            pos += len(x) + 1
            ends.append(pos)
        reads.append(Lines(offset, pos, part, ends))
        offset = pos
    return reads


def transform(detect: bool) -> Transform:
    compiled, _ = load_policy(str(POLICY))
    detector = build_engine(DetectConfig())[0] if detect else None
    t = build_transform(compiled, ENRICH, node_name="node-1", detector=detector)
    assert t is not None
    return t


def spec() -> ShapeSpec:
    compiled, _ = load_policy(str(POLICY))
    return ShapeSpec(compiled.policy, ENRICH, "node-1", 4096)


def comparable(chunk: Chunk) -> tuple[Any, ...]:
    return (chunk.fid, chunk.start, chunk.end, chunk.records, chunk.ends, chunk.starts)


@pytest.fixture(scope="module")
def pool() -> Any:
    p = ShapePool(2, spec())
    yield p
    p.close()


def test_a_worker_shapes_a_read_exactly_as_the_agents_process(pool: ShapePool) -> None:
    reads = reads_of(corpus_lines(), 400)
    here = LineProcessor(transform(detect=False))
    shaped_counts: list[Any] = []

    async def shape_all() -> list[Any]:
        return await asyncio.gather(*(pool.shape(1, r, "/var/log/audit.log") for r in reads))

    results = asyncio.run(shape_all())
    elsewhere = LineProcessor(transform(detect=False))
    for read, (shaped, counts) in zip(reads, results, strict=True):
        expected = here.process(1, read, "/var/log/audit.log")
        assert comparable(shaped.events) == comparable(expected.events)
        assert [(d.kind, d.reason, d.offset, d.length, d.line) for d in shaped.dead] == [(d.kind, d.reason, d.offset, d.length, d.line) for d in expected.dead]
        assert shaped.counts == expected.counts
        elsewhere.absorb(shaped, counts, shaped.alerts)
        shaped_counts.append(counts)
    assert sum(len(s.dead) for s, _ in results) > 0  # the poison lines were there
    assert elsewhere.counts() == here.counts()
    assert here.transform is not None and elsewhere.transform is not None
    assert elsewhere.transform.matched == here.transform.matched
    assert elsewhere.transform.drops == here.transform.drops
    assert elsewhere.transform.withheld_bodies == here.transform.withheld_bodies


def test_detection_alone_raises_what_the_whole_path_raises() -> None:
    reads = reads_of(corpus_lines(), 300)
    whole = LineProcessor(transform(detect=True))
    alone = LineProcessor(transform(detect=True))
    for read in reads:
        expected = whole.process(1, read, "p", detect_from=read.start + 1000)
        got = alone.detect(1, read, detect_from=read.start + 1000, pending_alerts=None)
        assert comparable(got) == comparable(expected.alerts)
    assert whole.counts()["alerts"] == alone.counts()["alerts"] > 0


class Sinks:
    """The two ends of the stage for a test: what it hands on, and the ledger's acknowledgements."""

    def __init__(self) -> None:
        self.events: list[Chunk] = []
        self.alerts: list[Chunk] = []

    async def handoff(self, events: Chunk, alerts: Chunk) -> None:
        if events.records:
            self.events.append(events)
        if alerts.records:
            self.alerts.append(alerts)


def run_stage(tmp_path: Path, reads: list[Lines], pool: ShapePool | None, min_bytes: int) -> tuple[Sinks, dict[str, int], list[dict[str, Any]]]:
    async def main() -> tuple[Sinks, dict[str, int]]:
        sinks = Sinks()
        deadletter = DeadLetterStore(str(tmp_path / f"state-{id(pool)}-{min_bytes}"), max_bytes=1 << 30, max_event_bytes=1 << 20)
        ledger = Ledger(["archive", "alerts"], on_advance=lambda fid, offset: None)
        budget = ByteBudget(1 << 30)
        processor = LineProcessor(transform(detect=True))
        stage = Stage(
            processor,
            deadletter=deadletter,
            budget=budget,
            ledger=ledger,
            handoff=sinks.handoff,
            event_sinks=lambda: ["archive"],
            alert_targets=lambda: ["alerts"],
            pool=pool,
            pool_min_bytes=min_bytes,
        )
        stage.pool = pool
        for read in reads:
            await stage.take(1, "/var/log/audit.log", read)
        await stage.drain()
        if pool is not None:
            assert stage.pooled_reads > 0
        stage.pool = None  # the module's pool outlives this stage
        await stage.aclose()
        deadletter.close()
        return sinks, processor.counts()

    sinks, counts = asyncio.run(main())
    dead = [json.loads(x) for p in sorted((tmp_path / f"state-{id(pool)}-{min_bytes}" / "deadletter").glob("*.ndjson")) for x in p.read_text().splitlines()]
    return sinks, counts, [{k: d[k] for k in ("reason", "source")} for d in dead]


def test_the_stage_hands_reads_on_in_order_whether_workers_shape_them_or_not(tmp_path: Path, pool: ShapePool) -> None:
    reads = reads_of(corpus_lines(), 150)
    # some reads pooled, some not: every second read is larger than the threshold
    sizes = sorted(r.end - r.start for r in reads)
    threshold = sizes[len(sizes) // 2]
    alone, alone_counts, alone_dead = run_stage(tmp_path, reads, None, 1)
    mixed, mixed_counts, mixed_dead = run_stage(tmp_path, reads, pool, threshold)
    pooled, pooled_counts, pooled_dead = run_stage(tmp_path, reads, pool, 1)
    for got, counts, dead in ((mixed, mixed_counts, mixed_dead), (pooled, pooled_counts, pooled_dead)):
        assert [comparable(c) for c in got.events] == [comparable(c) for c in alone.events]
        assert [comparable(c) for c in got.alerts] == [comparable(c) for c in alone.alerts]
        assert counts == alone_counts
        assert dead == alone_dead
    assert alone.alerts and alone_dead


def test_worker_count_defaults_to_none_and_null_is_one_per_core_beyond_the_first() -> None:
    assert ProcessingConfig().worker_count(cpus=8) == 0
    assert ProcessingConfig(workers=None).worker_count(cpus=1) == 0
    assert ProcessingConfig(workers=None).worker_count(cpus=2) == 1
    assert ProcessingConfig(workers=None).worker_count(cpus=64) == 4
    assert ProcessingConfig(workers=0).worker_count(cpus=8) == 0
    assert ProcessingConfig(workers=3).worker_count(cpus=1) == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
def test_workers_die_with_a_killed_agent(tmp_path: Path) -> None:
    """SIGKILL of the agent leaves no worker process behind (they would hold memory forever)."""
    import os
    import signal
    import subprocess

    from tests.support.wait import until_blocking

    script = tmp_path / "agent.py"
    script.write_text(
        "import asyncio, sys, time\n"
        "from kube_audit_shipper.model import Lines\n"
        "from kube_audit_shipper.process.enrich.config import EnrichConfig\n"
        "from kube_audit_shipper.process.workers import ShapePool, ShapeSpec\n"
        "if __name__ == '__main__':\n"  # spawn imports the main module again in each worker
        "    pool = ShapePool(2, ShapeSpec(None, EnrichConfig(), 'n', 16))\n"
        "    asyncio.run(pool.shape(1, Lines(0, 3, [b'{}'], [3]), 'p'))\n"
        "    print(' '.join(str(p) for p in pool._executor._processes), flush=True)\n"
        "    time.sleep(600)\n"
    )
    with subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE, text=True) as agent:
        try:
            assert agent.stdout is not None
            workers = [int(p) for p in agent.stdout.readline().split()]
            assert workers  # started on demand: one or two
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)

            def gone(pid: int) -> bool:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return True
                with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for init to reap it is gone too
                    return f.read().rsplit(")", 1)[1].split()[0] == "Z"

            until_blocking(lambda: all(gone(p) for p in workers), what="workers gone", timeout_s=10)
        finally:
            agent.kill()

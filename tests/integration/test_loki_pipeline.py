"""The whole agent (tail, decode, enrich, batch, LokiSink, checkpoints, dead letters) shipping a real audit log to the
test Loki: every auditID stored once, or dead-lettered once with Loki's reason."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from kube_audit_shipper.config import Config, parse
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.demo.events import AuditEventGenerator
from tests.support.corpus import numbered_lines
from tests.support.harness import Running, append, run_once
from tests.support.loki_server import LokiServer, recent_corpus
from tests.support.wait import until


def config(tmp: Path, url: str, **sink: Any) -> Config:
    return parse(
        {
            "state_dir": str(tmp / "state"),
            "node_name": "cp-test",
            "input": {"paths": [str(tmp / "log" / "audit.log")], "poll_interval_ms": 50, "rescan_interval_ms": 200},
            "enrich": {"static_fields": {"cluster_id": "c0123"}},
            "batch": {"max_events": 4096, "max_bytes": 4 << 20, "max_wait_ms": 50},
            "sinks": [
                {
                    "name": "loki",
                    "type": "loki",
                    "url": url,
                    "tenant_id": "",
                    "labels": {"job": "kube-audit", "cluster": "c0123"},
                    "label_fields": ["verb"],
                    "encoding": "protobuf",
                    "retry": {"initial_ms": 1, "max_ms": 50},
                    **sink,
                }
            ],
            "checkpoint": {"flush_interval_ms": 50},
            "metrics": {"listen": None},
        }
    )


def generated(n: int, seed: int = 4) -> list[bytes]:
    return list(AuditEventGenerator(seed, start_time=datetime.now(UTC) - timedelta(minutes=30)).lines(n))


def ids(lines: list[str] | list[bytes]) -> list[str]:
    return [msgspec.json.decode(x)["auditID"] for x in lines]


def dead_letters(tmp: Path) -> list[dict[str, Any]]:
    store = DeadLetterStore(tmp / "state", max_bytes=1 << 30, max_event_bytes=16 << 20)
    try:
        return list(store.iter_records())
    finally:
        store.close()


def test_a_real_audit_log_reaches_loki_once_per_event(loki_server: LokiServer, tmp_path: Path) -> None:
    lines = recent_corpus(numbered_lines(330)) + generated(3000)
    append(tmp_path / "log" / "audit.log", lines)
    agent = run_once(config(tmp_path, loki_server.url))
    stored = loki_server.lines()
    assert Counter(ids(stored)) == Counter(ids(lines))  # every auditID, once
    assert dead_letters(tmp_path) == []
    assert agent.metrics_state().shipped["loki"][0] == len(lines)
    for labels, entries in loki_server.stored().items():
        assert labels.startswith('{cluster="c0123", job="kube-audit", node="cp-test", service_name="kube-audit"')
        for e in entries:
            event = msgspec.json.decode(e.line)
            assert event["node"] == "cp-test" and event["cluster_id"] == "c0123" and "derived" in event  # enriched
            assert dict(e.metadata)["auditID"] == event["auditID"]
    statuses = {p.status for p in loki_server.pushes}
    assert statuses <= {204, 429}, statuses  # 429: Loki's stock ingestion rate limit, answered by a retry
    assert all(len(p.streams) >= 1 for p in loki_server.pushes)


def test_events_loki_refuses_are_dead_lettered_with_its_reason_and_the_rest_stored_once(loki_server: LokiServer, tmp_path: Path) -> None:
    old = numbered_lines(330, prefix="rec")  # as recorded, years ago: Loki refuses those with a timestamp (too old)
    fresh = generated(1500)
    mixed = [line for pair in zip(fresh, old) for line in pair] + fresh[len(old) :]
    append(tmp_path / "log" / "audit.log", mixed)
    run_once(config(tmp_path, loki_server.url, encoding="json"))
    dead = {msgspec.json.decode(d["event"])["auditID"]: d for d in dead_letters(tmp_path)}
    stored = ids(loki_server.lines())
    assert len(stored) == len(set(stored)) and not set(stored) & set(dead)
    assert sorted(stored + list(dead)) == sorted(ids(mixed))  # each event exactly once: stored or dead-lettered
    assert dead and all(d["sink"] == "loki" and d["reason"].startswith("sink loki: too_old: entry for stream '{") for d in dead.values())
    assert set(ids(fresh)) <= set(stored)
    received = Counter((labels, e.ts_ns, e.line) for labels, e in loki_server.received())
    assert max(received.values()) == 1  # a 400 never made the sink send Loki's stored entries again


def test_a_running_agent_ships_what_is_appended(loki_server: LokiServer, tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    first, second = generated(500, seed=8), generated(700, seed=9)
    append(log, first)

    async def scenario() -> None:
        async with Running(config(tmp_path, loki_server.url)) as running:
            await until(lambda: len(loki_server.lines()) == len(first), what="first events in Loki")
            append(log, second)
            await until(lambda: len(loki_server.lines()) == len(first) + len(second), what="appended events in Loki")
            assert await running.stop() == 0

    asyncio.run(scenario())
    assert Counter(ids(loki_server.lines())) == Counter(ids(first + second))

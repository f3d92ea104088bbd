"""The real pipeline (tailer → policy/enrichment → engine → S3 sink) into a real S3 server: `run --once`
uploads every staged object before it returns; a stop (what SIGTERM does) uploads what is staged."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard

from kube_audit_shipper.demo.events import AuditEventGenerator
from kube_audit_shipper.sinks.s3.sink import S3Sink
from tests.support.corpus import audit_id, numbered_lines
from tests.support.harness import Running, append, make_config, rotate, run_once
from tests.support.s3_server import SeaweedS3, new_bucket, read_objects
from tests.support.wait import until

KEY_RE = re.compile(r"^audit/cluster=c-e2e/dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/cp-e2e-\d{8}T\d{6}Z-\d{6}-[0-9a-f]{8}\.ndjson\.zst$")


def lines_of(objects: dict[str, bytes]) -> list[bytes]:
    out = []
    for body in objects.values():
        out.extend(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True).read().splitlines())
    return out


def config(tmp: Path, server: SeaweedS3, bucket: str, **sink: Any) -> Any:
    # the example config: {cluster_id} not in key_fields, so it comes from the enriched events
    s3 = server.sink_config(bucket, retry={"initial_ms": 20, "max_ms": 500}, **sink)
    enrich = {"static_fields": {"cluster_id": "c-e2e"}}
    return make_config(tmp, sinks=[s3], node_name="cp-e2e", enrich=enrich, input={"backfill_rotated": True})


def test_run_once_ships_every_event_to_objects(s3_server: SeaweedS3, tmp_path: Path) -> None:
    bucket = asyncio.run(new_bucket(s3_server.endpoint))
    log = tmp_path / "log" / "audit.log"
    gen = AuditEventGenerator(seed=21, start_time=datetime(2026, 11, 22, 10, 30, tzinfo=UTC))
    first = numbered_lines(900, prefix="e2e")
    second = list(gen.lines(3000))
    append(log, first)
    rotate(log, "2026-11-22T10-30-00.000", gz=True)
    append(log, second)
    agent = run_once(config(tmp_path, s3_server, bucket))
    objects = asyncio.run(read_objects(s3_server.endpoint, bucket))
    got = lines_of(objects)
    assert sorted(audit_id(x) for x in got) == sorted(audit_id(x) for x in first + second)  # each event once
    assert all(b'"cluster_id":"c-e2e"' in x and b'"node":"cp-e2e"' in x for x in got)  # enriched
    assert objects and all(KEY_RE.match(k) for k in objects), sorted(objects)[:3]
    sink = agent.runners[0].sink
    assert isinstance(sink, S3Sink) and sink.upload_state == "ok" and sink.staged_objects == 0
    assert sorted(p.name for p in (tmp_path / "state" / "s3" / "archive").iterdir()) == ["seq"]
    assert agent.metrics_state().shipped["archive"][0] == len(got)


@pytest.mark.asyncio
async def test_stop_uploads_what_is_staged(s3_server: SeaweedS3, tmp_path: Path) -> None:
    bucket = await new_bucket(s3_server.endpoint)
    log = tmp_path / "log" / "audit.log"
    lines = list(AuditEventGenerator(seed=22, start_time=datetime(2026, 11, 22, 11, 0, tzinfo=UTC)).lines(2000))
    append(log, lines[:1000])
    async with Running(config(tmp_path, s3_server, bucket, object_max_age_s=3600)) as running:
        sink = running.agent.runners[0].sink
        await until(lambda: running.agent.runners[0].shipped_events == 1000, timeout_s=30, what="first events staged")
        append(log, lines[1000:])
        await until(lambda: running.agent.runners[0].shipped_events == 2000, timeout_s=30, what="all events staged")
        assert await read_objects(s3_server.endpoint, bucket) == {}  # acknowledged once staged; the object is still open
        assert sink.staged_objects == 1
        assert await running.stop() == 0  # what SIGTERM does
    objects = await read_objects(s3_server.endpoint, bucket)
    assert len(objects) == 1 and sorted(audit_id(x) for x in lines_of(objects)) == sorted(audit_id(x) for x in lines)
    assert sink.staged_objects == 0

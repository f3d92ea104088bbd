"""LokiSink through the real delivery engine (SinkRunner, Ledger, DeadLetterStore) against the test Loki on 127.0.0.1:
every answer of the reference table, auth, tenants, TLS, and order across retries, splits and batches."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trustme

from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.config import BatchConfig, RetryConfig
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Retry
from kube_audit_shipper.delivery.runner import SinkRunner
from kube_audit_shipper.demo.events import AuditEventGenerator, EventMix
from kube_audit_shipper.model import Chunk
from kube_audit_shipper.sinks.loki.config import LokiSinkConfig
from kube_audit_shipper.sinks.loki.event import TRIM_ANNOTATION
from kube_audit_shipper.sinks.loki.sink import LokiSink
from tests.support.corpus import numbered_lines
from tests.support.loki_server import Answer, LokiLimits, LokiServer, ManualClock, recent_corpus
from tests.support.sink_context import context

FAST = RetryConfig(initial_ms=1, max_ms=20)


def recent(n: int, seed: int = 1, **mix: Any) -> list[bytes]:
    start = datetime.now(UTC) - timedelta(minutes=20)
    return list(AuditEventGenerator(seed, start_time=start, mix=EventMix(**mix) if mix else None).lines(n))


def make(url: str, **kw: Any) -> LokiSink:
    return LokiSink(msgspec.convert({"type": "loki", "name": "loki", "url": url, **kw}, LokiSinkConfig), context("/var/lib/kas"))


def ship(sink: LokiSink, records: list[bytes], tmp: Path, *, max_events: int = 500, max_bytes: int = 4 << 20) -> list[dict[str, Any]]:
    """Every record through a SinkRunner (batching, retries, splits, dead letters); returns the dead letters."""

    async def run() -> None:
        ledger = Ledger([sink.name])
        ledger.open(1, 0)
        runner = SinkRunner(
            sink, batch=BatchConfig(max_events=max_events, max_bytes=max_bytes, max_wait_ms=0), retry=FAST, concurrency=4, ledger=ledger, deadletter=dl
        )
        assert runner.concurrency == 1  # the sink says so: order per stream
        ends, pos = [], 0
        for r in records:
            pos += len(r) + 1
            ends.append(pos)
        task = asyncio.get_running_loop().create_task(runner.run())
        runner.queue.put_nowait(Chunk(1, 0, pos, records, ends, time.monotonic()))
        await runner.stop()
        await asyncio.wait_for(task, 30)
        assert await asyncio.wait_for(runner.finish(None), 30) == 0
        await sink.aclose()
        assert ledger.offset(1) == pos  # every record acknowledged: stored or dead-lettered

    dl = DeadLetterStore(tmp / "state", max_bytes=64 << 20, max_event_bytes=4 << 20)
    asyncio.run(run())
    dead = list(dl.iter_records())
    dl.close()
    return dead


def attempt(sink: LokiSink, records: list[bytes]) -> Outcome:
    """One send and its classification, as the engine makes it."""

    async def run() -> Outcome:
        (req,) = sink.encode(records)
        try:
            result: Any = await sink.send(req)
        except Exception as exc:
            result = exc
        await sink.aclose()
        return sink.classify(req, result)

    return asyncio.run(run())


def audit_ids(lines: list[str] | list[bytes]) -> list[str]:
    return [msgspec.json.decode(x)["auditID"] for x in lines]


def assert_each_once(loki_server: LokiServer, records: list[bytes], tenant: str = "fake") -> None:
    assert sorted(loki_server.lines(tenant)) == sorted(r.decode() for r in records)


@pytest.mark.parametrize("options", [{}, {"encoding": "json"}, {"encoding": "json", "json_compression": "none"}])
def test_real_events_reach_loki_whole_and_once(loki_server: LokiServer, tmp_path: Path, options: dict[str, Any]) -> None:
    records = recent_corpus(numbered_lines(330)) + recent(1500)
    sink = make(loki_server.url, labels={"job": "kube-audit", "cluster": "c0123"}, label_fields=["verb", "level"], **options)
    assert ship(sink, records, tmp_path) == []
    assert_each_once(loki_server, records)
    stored = loki_server.stored()
    assert all('cluster="c0123"' in k and 'job="kube-audit"' in k and 'node="cp-1"' in k and 'service_name="kube-audit"' in k for k in stored)
    by_id = {dict(e.metadata).get("auditID"): e for es in stored.values() for e in es}
    assert set(by_id) == set(audit_ids(records))
    assert all(p.headers["content-type"].startswith("application/x-protobuf" if not options else "application/json") for p in loki_server.pushes)


def test_tenant_and_custom_headers(tmp_path: Path) -> None:
    with LokiServer(auth_enabled=True) as loki_server:
        records = recent(50)
        assert ship(make(loki_server.url, tenant_id="team-a", headers={"X-Audit-Source": "cp"}), records, tmp_path) == []
        assert_each_once(loki_server, records, "team-a")
        push = loki_server.pushes[0]
        assert push.tenant == "team-a" and push.headers["x-audit-source"] == "cp" and push.headers["user-agent"].startswith("kube-audit-shipper/")
        out = attempt(make(loki_server.url), recent(1))  # no tenant: 401 no org id
        assert isinstance(out, Blocked) and out.reason.startswith("unauthorized: HTTP 401: no org id")


def test_basic_auth(tmp_path: Path) -> None:
    with LokiServer(basic_auth=("tenant", "pa55")) as loki_server:
        records = recent(20)
        assert ship(make(loki_server.url, basic_auth={"username": "tenant", "password": "pa55"}), records, tmp_path) == []
        assert_each_once(loki_server, records)
        out = attempt(make(loki_server.url, basic_auth={"username": "tenant", "password": "wrong"}), recent(1, seed=2))
        assert isinstance(out, Blocked) and out.reason.startswith("unauthorized:") and "pa55" not in out.reason and "wrong" not in out.reason


def test_bearer_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    with LokiServer(bearer_token="first-token") as loki_server:
        sink = make(loki_server.url, bearer_token_file=str(token))
        assert isinstance(attempt(sink, recent(1)), Delivered)
        token.write_text("second-token-rotated\n")
        loki_server.bearer_token = "second-token-rotated"
        assert isinstance(attempt(sink, recent(1, seed=3)), Delivered)
        assert [p.headers["authorization"] for p in loki_server.pushes] == ["Bearer first-token", "Bearer second-token-rotated"]
        token.unlink()
        out = attempt(sink, recent(1, seed=4))
        assert isinstance(out, Blocked) and out.reason.startswith("credentials: cannot read bearer_token_file")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(ca: trustme.CA, *, client_certs: bool = False) -> LokiServer:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    if client_certs:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(ctx)
    return LokiServer(ssl_context=ctx)


def test_tls_verifies_by_default_and_takes_a_ca_and_client_certificate(ca: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("kube-audit-shipper")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert_file))
    client.private_key_pem.write_to_path(str(key_file))
    with tls_server(ca) as loki_server:
        assert loki_server.url.startswith("https://127.0.0.1:")
        out = attempt(make(loki_server.url), recent(1))  # the test CA is not a system CA: refused
        assert isinstance(out, Blocked) and out.reason.startswith("tls_error:") and "CERTIFICATE_VERIFY_FAILED" in out.reason
        assert isinstance(attempt(make(loki_server.url, tls={"ca_file": str(ca_file)}), recent(1)), Delivered)
        assert isinstance(attempt(make(loki_server.url, tls={"insecure_skip_verify": True}), recent(1, seed=2)), Delivered)
        out = attempt(make(loki_server.url, tls={"ca_file": str(tmp_path / "missing.pem")}), recent(1))
        assert isinstance(out, Blocked) and out.reason.startswith("tls_error: cannot load the TLS files")
    with tls_server(ca, client_certs=True) as loki_server:
        with_cert = make(loki_server.url, tls={"ca_file": str(ca_file), "cert_file": str(cert_file), "key_file": str(key_file)})
        assert isinstance(attempt(with_cert, recent(3)), Delivered) and len(loki_server.lines()) == 3
        assert not isinstance(attempt(make(loki_server.url, tls={"ca_file": str(ca_file)}), recent(1, seed=5)), Delivered)


def test_429_and_5xx_are_retried_and_a_proxys_retry_after_is_read(loki_server: LokiServer, tmp_path: Path) -> None:
    loki_server.inject(
        429,
        "ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting to ingest '1' lines totaling '1' "
        "bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased",
    )
    loki_server.inject(503, "upstream connect error or disconnect/reset before headers", {"Retry-After": "0"})
    loki_server.inject(500, "rpc error: code = Unavailable desc = connection error")
    records = recent(30)
    assert ship(make(loki_server.url), records, tmp_path) == []
    assert loki_server.statuses() == [429, 503, 500, 204]
    assert_each_once(loki_server, records)
    sink = make(loki_server.url)
    loki_server.inject(503, "busy", {"Retry-After": "12"})
    out = attempt(sink, recent(1, seed=9))
    assert isinstance(out, Retry) and out.after_s == 12.0


def test_a_request_over_the_ingestion_burst_is_split_not_retried_for_ever(tmp_path: Path) -> None:
    limits = LokiLimits(ingestion_rate_bytes=256 << 10, ingestion_burst_bytes=384 << 10)
    with LokiServer(limits, clock=ManualClock(step_s=1.0)) as loki_server:  # each push refills 256 KiB of tokens
        records = recent(2500)
        assert ship(make(loki_server.url), records, tmp_path, max_events=5000) == []
        assert_each_once(loki_server, records)
        refused = [p for p in loki_server.pushes if p.status == 429]
        assert refused and all("ingestion rate limit exceeded" in p.body for p in refused)
        sizes = [sum(len(e.line) for _, es in p.streams for e in es) for p in loki_server.pushes]
        assert max(sizes[-5:]) < max(sizes)  # the refused big requests were split into smaller ones
        assert len(loki_server.pushes) < 40


def test_a_grpc_message_over_the_limit_is_split(tmp_path: Path) -> None:
    with LokiServer(LokiLimits(grpc_max_recv_msg_size=200 << 10)) as loki_server:
        records = recent(1200)
        assert ship(make(loki_server.url), records, tmp_path) == []
        assert_each_once(loki_server, records)
        assert 500 in loki_server.statuses() and "received message larger than max" in next(p.body for p in loki_server.pushes if p.status == 500)


def test_a_400_dead_letters_only_what_loki_refused_and_the_rest_is_not_sent_again(tmp_path: Path) -> None:
    with LokiServer(LokiLimits(max_line_size=64 << 10)) as loki_server:
        fresh = recent(400)
        old = numbered_lines(120, prefix="old")  # the corpus as recorded: years ago, so too old for Loki
        old_ids = {
            i
            for i, line in zip(audit_ids(old), old)
            if msgspec.json.decode(line).get("stageTimestamp")
            or msgspec.json.decode(line).get("requestReceivedTimestamp")
            or msgspec.json.decode(line).get("timestamp")
        }
        records = fresh + old
        dead = ship(make(loki_server.url, label_fields=["verb"]), records, tmp_path)
        long_ids = {i for i, r in zip(audit_ids(fresh), fresh) if len(r) > 64 << 10}
        assert long_ids, "the generator mix has events over 64 KiB"
        dead_ids = {msgspec.json.decode(d["event"])["auditID"]: d["reason"] for d in dead}
        assert set(dead_ids) == old_ids | long_ids and len(dead) == len(dead_ids)
        for aid, reason in dead_ids.items():
            if aid in long_ids:
                assert reason.startswith("sink loki: line_too_long: max entry size '65536' bytes exceeded for stream '{")
            else:
                assert reason.startswith("sink loki: too_old: entry for stream '{") and "has timestamp too old" in reason
        stored = audit_ids(loki_server.lines())
        assert sorted(stored) == sorted(set(audit_ids(records)) - set(dead_ids))
        received = [(labels, e.ts_ns, e.line) for labels, e in loki_server.received()]
        assert len(received) == len(set(received)) == len(records)  # nothing pushed twice


def test_entries_too_far_behind_are_dead_lettered(loki_server: LokiServer, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    newer = list(AuditEventGenerator(5, start_time=now - timedelta(minutes=5)).lines(50))
    older = list(AuditEventGenerator(6, start_time=now - timedelta(hours=3)).lines(30))
    assert ship(make(loki_server.url, label_fields=[]), newer, tmp_path / "a") == []
    dead = ship(make(loki_server.url, label_fields=[]), older, tmp_path / "b")
    assert sorted(audit_ids([d["event"] for d in dead])) == sorted(audit_ids(older))
    assert all(d["reason"].startswith("sink loki: too_far_behind: ") and "entry too far behind" in d["reason"] for d in dead)
    assert sum("entry with timestamp" in d["reason"] for d in dead) == 10  # Loki lists 10; the others are the oldest left
    assert sorted(loki_server.lines()) == sorted(r.decode() for r in newer)


def test_oversize_events_are_stored_trimmed_not_refused(loki_server: LokiServer, tmp_path: Path) -> None:
    records = recent(300, big_event_probability=0.03, big_event_bytes=1_500_000)
    big = {aid for aid, r in zip(audit_ids(records), records) if len(r) > 256 << 10}
    assert big
    assert ship(make(loki_server.url, label_fields=["level"]), records, tmp_path) == []
    stored = {msgspec.json.decode(line)["auditID"]: msgspec.json.decode(line) for line in loki_server.lines()}
    assert set(stored) == set(audit_ids(records))
    for aid in big:
        assert "requestObject" not in stored[aid] and TRIM_ANNOTATION in stored[aid]["annotations"]


def test_wrong_url_blocks(loki_server: LokiServer) -> None:
    out = attempt(make(loki_server.url + "/nope"), recent(1))
    assert isinstance(out, Blocked) and out.reason.startswith("not_found: HTTP 404")


def test_connection_refused_is_retried(loki_server: LokiServer) -> None:
    url = loki_server.url
    loki_server.stop()
    out = attempt(make(url, timeout_s=5), recent(1))
    assert isinstance(out, Retry) and out.reason.startswith("connect_error:")


def test_per_stream_rate_limit_is_retried(tmp_path: Path) -> None:
    limits = LokiLimits(per_stream_rate_bytes=256 << 10, per_stream_burst_bytes=512 << 10)
    with LokiServer(limits, clock=ManualClock(step_s=0.05)) as loki_server:
        records = recent(3000)
        assert ship(make(loki_server.url, label_fields=[], max_request_bytes=200 << 10), records, tmp_path, max_events=5000) == []
        refused = [p for p in loki_server.pushes if p.status == 429]
        assert refused and all("Per stream rate limit exceeded" in p.body for p in refused)
        assert_each_once(loki_server, records)


def faults(every: dict[int, Answer]) -> Callable[[int], Answer | None]:
    def rule(n: int) -> Answer | None:
        for k, answer in every.items():
            if n % k == 0:
                return answer
        return None

    return rule


def test_a_streams_entries_stay_ordered_across_retries_splits_and_batches(tmp_path: Path) -> None:
    text = {"Content-Type": "text/plain; charset=utf-8"}
    rule = faults(
        {
            3: (500, text, b"rpc error: code = Unavailable desc = transport is closing\n"),
            7: (
                429,
                text,
                (
                    b"ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting to ingest '9' lines "
                    b"totaling '9' bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased\n"
                ),
            ),
        }
    )
    with LokiServer(LokiLimits(grpc_max_recv_msg_size=96 << 10), fault_rule=rule) as loki_server:
        records = recent(2500)
        sink = make(loki_server.url, label_fields=["verb", "level"], max_request_bytes=128 << 10)
        assert ship(sink, records, tmp_path, max_events=97) == []
        statuses = loki_server.statuses()
        assert {500, 429, 204} <= set(statuses) and any("larger than max" in p.body for p in loki_server.pushes)
        assert_each_once(loki_server, records)
        ts_of = {r.decode(): i for i, r in enumerate(records)}  # the generator writes in stageTimestamp order
        for labels, entries in loki_server.stored().items():
            positions = [ts_of[e.line] for e in entries]
            assert positions == sorted(positions), labels
            assert [e.ts_ns for e in entries] == sorted(e.ts_ns for e in entries)
        first_seen: dict[str, list[int]] = {}
        seen: set[str] = set()
        for labels, e in loki_server.received():  # arrival order, repeats of failed requests included
            if e.line not in seen:
                seen.add(e.line)
                first_seen.setdefault(labels, []).append(ts_of[e.line])
        assert all(p == sorted(p) for p in first_seen.values())

"""The SLS sink against the local SLS server (tests/support/sls_server.py, which verifies every request with the
official SDK's signing and protobuf code), driven by the real delivery engine: ACK's exec-alert query over the
real audit corpus, clock skew, quota storms, credential rotation, batch splitting, blocked errors, poison logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.config import BatchConfig, RetryConfig
from kube_audit_shipper.delivery.runner import SinkRunner
from kube_audit_shipper.model import Chunk
from kube_audit_shipper.sinks.sls.config import SlsSinkConfig
from kube_audit_shipper.sinks.sls.shape import TRUNCATED_ANNOTATION, parse_time
from kube_audit_shipper.sinks.sls.sink import SlsSink
from tests.support.corpus import corpus_lines, numbered_lines
from tests.support.sink_context import context
from tests.support.sls_server import SlsTestServer
from tests.support.wait import until

PROJECT, LOGSTORE = "k8s-log-c0123", "audit-c0123"
FAST = RetryConfig(initial_ms=1, max_ms=20)
BATCH = BatchConfig(max_events=4096, max_bytes=4 << 20, max_wait_ms=3_600_000)


def make_sink(sls_server: SlsTestServer | None, **over: Any) -> SlsSink:
    spec: dict[str, Any] = {
        "name": "sls",
        "type": "sls",
        "endpoint": over.pop("endpoint", None) or (sls_server.url if sls_server is not None else ""),
        "project": PROJECT,
        "logstore": LOGSTORE,
        "access_key_id": "AKID",
        "access_key_secret": "SECRET",
        "tags": {"cluster": "c0123"},
    }
    spec.update(over)
    spec = {k: v for k, v in spec.items() if v is not None}
    return SlsSink(msgspec.convert(spec, SlsSinkConfig), context("/var/lib/kas", input_paths=["/var/log/kubernetes/audit/audit.log"]))


def chunk(records: list[bytes], fid: int = 1, start: int = 0) -> Chunk:
    ends, pos = [], start
    for r in records:
        pos += len(r) + 1
        ends.append(pos)
    return Chunk(fid, start, pos, records, ends, time.monotonic())


class Run:
    """A SinkRunner over one file's records, with a real ledger and dead-letter store."""

    def __init__(self, sink: SlsSink, dl: DeadLetterStore, *, batch: BatchConfig = BATCH, retry: RetryConfig = FAST, concurrency: int = 1) -> None:
        self.sink = sink
        self.ledger = Ledger([sink.name])
        self.ledger.open(1, 0)
        self.dl = dl
        self.runner = SinkRunner(sink, batch=batch, retry=retry, concurrency=concurrency, ledger=self.ledger, deadletter=dl)
        self.end = 0

    async def __call__(self, records: list[bytes], timeout: float = 60.0) -> None:
        self.start(records)
        await self.wait(timeout)

    def start(self, records: list[bytes], per_chunk: int = 1000) -> None:
        self.task = asyncio.get_running_loop().create_task(self.runner.run())
        pos = 0
        for i in range(0, len(records), per_chunk):
            c = chunk(records[i : i + per_chunk], start=pos)
            pos = c.end
            self.runner.queue.put_nowait(c)
        self.end = pos
        self.runner.queue.put_nowait(None)

    async def wait(self, timeout: float = 60.0) -> None:
        try:
            await asyncio.wait_for(self.task, timeout)
            await asyncio.wait_for(self.runner.finish(None), timeout)
        finally:
            await self.sink.aclose()

    def dead(self) -> list[dict[str, Any]]:
        self.dl.sync()
        return list(self.dl.iter_records())


# -- SLS query semantics over the stored logs (what the ACK dashboards and alerts rely on) -----------------


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """JSON as an SLS JSON index sees it: leaves under their dot-joined paths."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    else:
        out[prefix] = value
    return out


def field(row: dict[str, str], name: str) -> Any:
    """`name` as an SLS query reads it: a plain key, or `key.sub.path` through a JSON index on `key`."""
    if name in row:
        return row[name]
    head, _, rest = name.partition(".")
    if not rest or head not in row:
        return None
    try:
        doc = json.loads(row[head])
    except ValueError:
        return None
    return flatten(doc).get(rest)


def matches(row: dict[str, str], **terms: str) -> bool:
    """`k1 : v1 and k2 : v2 ...` (tokens compared case-insensitively, as a text index does)."""
    for name, want in terms.items():
        got = field(row, name.replace("__", "."))
        if got is None or str(got).lower() != want.lower():
            return False
    return True


def exec_alert_rows(rows: list[dict[str, str]]) -> set[tuple[Any, ...]]:
    """verb : create and objectRef.subresource:exec and stage: ResponseStarted
    | SELECT auditID, "responseStatus.code", "annotations.authorization.k8s.io/reason", sourceIPs, "user.username", "objectRef.name"
    """
    return {
        (
            field(r, "auditID"),
            str(field(r, "responseStatus.code")),
            field(r, "annotations.authorization.k8s.io/reason"),
            field(r, "sourceIPs"),
            field(r, "user.username"),
            field(r, "objectRef.name"),
        )
        for r in rows
        if matches(r, verb="create", objectRef__subresource="exec", stage="ResponseStarted")
    }


def expected_exec_alert_rows(events: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    out = set()
    for e in events:
        if e.get("verb") == "create" and (e.get("objectRef") or {}).get("subresource") == "exec" and e.get("stage") == "ResponseStarted":
            out.add(
                (
                    e.get("auditID"),
                    str((e.get("responseStatus") or {}).get("code")),
                    (e.get("annotations") or {}).get("authorization.k8s.io/reason"),
                    json.dumps(e["sourceIPs"], separators=(",", ":")) if "sourceIPs" in e else None,
                    (e.get("user") or {}).get("username"),
                    (e.get("objectRef") or {}).get("name"),
                )
            )
    return out


# -- the ACK queries over the real corpus -----------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("signature_version", ["v1", "v4"])
async def test_ack_exec_alert_and_field_queries_over_the_real_corpus(sls_server: SlsTestServer, dl: DeadLetterStore, signature_version: str) -> None:
    lines = list(corpus_lines())
    events = [json.loads(line) for line in lines]
    run = Run(make_sink(sls_server, signature_version=signature_version, region="cn-hangzhou"), dl)
    await run(lines)
    assert run.ledger.offset(1) == run.end and run.dead() == []
    rows = sls_server.logs(LOGSTORE, PROJECT)
    assert len(rows) == len(events)

    # the ACK exec alert finds exactly the exec sessions, with the fields it SELECTs
    want = expected_exec_alert_rows(events)
    assert want, "the corpus has exec sessions at ResponseStarted"
    assert exec_alert_rows(rows) == want

    by_id: dict[Any, list[dict[str, str]]] = {}
    for r in rows:
        by_id.setdefault(r.get("auditID"), []).append(r)
    for e, r in zip(events, rows):  # one group, in order
        assert r.get("auditID") == e.get("auditID")
        # top-level strings as they are; objects and arrays as compact JSON that parses back to the original
        for k, v in e.items():
            if isinstance(v, str):
                assert r[k] == v
            elif isinstance(v, (dict, list)):
                assert json.loads(r[k]) == v
                assert msgspec.json.format(r[k], indent=-1) == r[k]  # compact, as Logtail writes it
            elif isinstance(v, bool):
                assert r[k] == ("true" if v else "false")
            elif v is None:
                assert r[k] == ""
            else:
                assert r[k] == json.dumps(v)
        if isinstance(e.get("user"), dict) and "username" in e["user"]:
            assert field(r, "user.username") == e["user"]["username"]
        if isinstance(e.get("objectRef"), dict) and "resource" in e["objectRef"]:
            assert field(r, "objectRef.resource") == e["objectRef"]["resource"]
        if isinstance(e.get("responseStatus"), dict) and "code" in e["responseStatus"]:
            assert field(r, "responseStatus.code") == e["responseStatus"]["code"]
        # __time__ is the event's own time, not the read time
        stamp = e.get("stageTimestamp") or e.get("requestReceivedTimestamp") or e.get("timestamp")
        if stamp and parse_time(stamp):
            assert (r["__time__"], r["__time_ns__"]) == parse_time(stamp)
        assert r["__source__"] and r["__tag__:__hostname__"] == "cp-1" and r["__tag__:cluster"] == "c0123"
        assert r["__tag__:__path__"] == "/var/log/kubernetes/audit/audit.log" and r["__tag__:__pack_id__"]
    # private endpoint: the project travels in x-log-project; Host is <project>.<ip:port> as Logtail sends it
    put = sls_server.putlogs()[0]
    assert put.headers.get("x-log-project") == PROJECT and put.headers.get("Host", "").startswith(PROJECT + ".127.0.0.1:")


@pytest.mark.asyncio
async def test_enrichment_fields_are_contents_and_derived_is_a_json_field(sls_server: SlsTestServer, dl: DeadLetterStore) -> None:
    event = json.loads(numbered_lines(1)[0])
    event.update(cluster_id="c0123", node="cp-1", derived={"user_kind": "human", "source_ip": "1.2.3.4", "latency_ms": 12.5})
    run = Run(make_sink(sls_server), dl)
    await run([json.dumps(event).encode()])
    (row,) = sls_server.logs(LOGSTORE)
    assert row["cluster_id"] == "c0123" and row["node"] == "cp-1"
    assert field(row, "derived.user_kind") == "human" and field(row, "derived.latency_ms") == 12.5


# -- errors ---------------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("signature_version", ["v1", "v4"])
@pytest.mark.parametrize("skew", [3600.0, -7200.0])
async def test_clock_skew_is_corrected_from_the_server_date_and_retried(
    sls_server: SlsTestServer, dl: DeadLetterStore, signature_version: str, skew: float
) -> None:
    sls_server.clock_offset_s = skew
    sink = make_sink(sls_server, signature_version=signature_version, region="cn-hangzhou")
    run = Run(sink, dl)
    await run(numbered_lines(50))
    assert [s.code or s.status for s in sls_server.putlogs()] == ["RequestTimeExpired", 200]
    assert abs(sink.client.clock_offset_s - skew) < 3
    assert run.ledger.offset(1) == run.end and len(sls_server.logs(LOGSTORE)) == 50
    assert sink.error_codes["RequestTimeExpired"] == 1 and sink.clock_adjustments == 1


@pytest.mark.asyncio
async def test_quota_storm_is_retried_until_everything_is_in_exactly_once(sls_server: SlsTestServer, dl: DeadLetterStore) -> None:
    for code, n in [("WriteQuotaExceed", 15), ("ShardWriteQuotaExceed", 15), ("ServerBusy", 5), ("InternalServerError", 5)]:
        sls_server.inject(code, n)
    sink = make_sink(sls_server, concurrency=4)
    lines = numbered_lines(3000)
    run = Run(sink, dl, batch=BatchConfig(max_events=100, max_bytes=4 << 20, max_wait_ms=3_600_000), concurrency=4)
    await run(lines)
    assert sls_server.pending_injections() == 0
    stored = [r["auditID"] for r in sls_server.logs(LOGSTORE)]
    assert sorted(stored) == sorted(json.loads(x)["auditID"] for x in lines)  # no loss, no duplicate
    assert run.ledger.offset(1) == run.end and run.dead() == []
    assert sink.error_codes["WriteQuotaExceed"] == 15 and sink.error_codes["ShardWriteQuotaExceed"] == 15
    assert sink.error_codes["ServerBusy"] == 5 and sink.error_codes["InternalServerError"] == 5
    families = {f.name: f for f in sink.metric_families()}
    assert {s.labels["code"]: s.value for s in families["kube_audit_shipper_sls_errors"].samples}["WriteQuotaExceed"] == 15


@pytest.mark.asyncio
async def test_network_errors_are_retried(dl: DeadLetterStore) -> None:
    sls_server = SlsTestServer().start()
    port = sls_server.port
    sls_server.stop()  # nothing listens there for now
    sink = make_sink(None, endpoint=f"http://127.0.0.1:{port}")
    run = Run(sink, dl)
    run.start(numbered_lines(10))
    await until(lambda: sink.error_codes["NetworkError"] >= 2, what="connection refused twice")
    assert run.runner.state == "retrying" and run.ledger.offset(1) == 0
    run.task.cancel()
    await asyncio.gather(run.task, return_exceptions=True)
    await run.runner.finish(0)
    await sink.aclose()


def _write_creds(path: Path, key: str, secret: str, token: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"AccessKeyId": key, "AccessKeySecret": secret, "SecurityToken": token, "Expiration": "2030-01-01T00:00:00Z"}))
    st = path.stat().st_mtime_ns if path.exists() else 0
    os.replace(tmp, path)
    os.utime(path, ns=(st + 10**9, st + 10**9))  # a visible mtime change even on coarse clocks


@pytest.mark.asyncio
async def test_sts_credential_rotation_without_restart(tmp_path: Path, dl: DeadLetterStore, caplog: pytest.LogCaptureFixture) -> None:
    creds = tmp_path / "sts.json"
    _write_creds(creds, "STS.one", "secret-one", "token-one")
    with SlsTestServer(keys={"STS.one": ("secret-one", "token-one")}) as sls_server:
        sink = make_sink(sls_server, access_key_id=None, access_key_secret=None, credentials_file=str(creds))
        first, rest = numbered_lines(20), numbered_lines(40, start=20)
        await Run(sink, dl)(first)
        assert len(sls_server.logs(LOGSTORE)) == 20
        # the token is renewed on the server (the old one revoked) before the file is rewritten
        sls_server.rotate_key("STS.one", "STS.one", "secret-one", "token-two")
        run = Run(sink, dl, retry=RetryConfig(initial_ms=1, max_ms=50), batch=BatchConfig(max_events=20, max_bytes=4 << 20, max_wait_ms=3_600_000))
        run.start(rest)
        with caplog.at_level(logging.ERROR):
            await until(lambda: sink.error_codes["Unauthorized"] >= 1, what="the stale token refused")
            await until(lambda: run.runner.state == "blocked", what="blocked")
            # a new key pair too
            sls_server.rotate_key("STS.one", "STS.two", "secret-two", "token-two")
            _write_creds(creds, "STS.two", "secret-two", "token-two")
            await run.wait()
        assert run.ledger.offset(1) == run.end and run.dead() == []
        assert sorted(r["auditID"] for r in sls_server.logs(LOGSTORE)) == sorted(json.loads(x)["auditID"] for x in first + rest)
        assert sink.credentials.reloads >= 1
        blocked = [r for r in caplog.records if r.getMessage().startswith("sink blocked")]
        assert blocked
        reason = blocked[0].__dict__["reason"]
        assert "Unauthorized" in reason and PROJECT in reason and LOGSTORE in reason and "STS.one" in reason and str(creds) in reason
        assert "secret-one" not in caplog.text and "secret-two" not in caplog.text and "token-" not in caplog.text


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("over", "code", "names"),
    [
        ({"access_key_secret": "WRONG-SECRET"}, "SignatureNotMatch", ["AKID", PROJECT, LOGSTORE]),
        ({"access_key_id": "NOPE"}, "InvalidAccessKeyId", ["NOPE", PROJECT, LOGSTORE]),
        ({"project": "k8s-log-other"}, "ProjectNotExist", ["k8s-log-other", "sls ensure"]),
        ({"logstore": "audit-other"}, "LogStoreNotExist", ["audit-other", "sls ensure"]),
    ],
)
async def test_blocking_errors_keep_the_data_and_say_what_to_fix(
    sls_server: SlsTestServer, dl: DeadLetterStore, over: dict[str, Any], code: str, names: list[str]
) -> None:
    sink = make_sink(sls_server, **over)
    run = Run(sink, dl)
    run.start(numbered_lines(5))
    await until(lambda: sink.error_codes[code] >= 2, what=code)
    assert run.runner.state == "blocked" and run.ledger.offset(1) == 0 and run.dead() == []
    reason = run.runner.last_error or ""
    assert all(n in reason for n in names), reason
    assert "WRONG-SECRET" not in reason and "SECRET" not in reason.replace("WRONG-SECRET", "")
    assert sink.last_error is not None and sink.last_error.request_id and sink.last_error.request_id in reason
    run.task.cancel()
    await asyncio.gather(run.task, return_exceptions=True)
    await run.runner.finish(0)
    await sink.aclose()


@pytest.mark.asyncio
async def test_missing_logstore_unblocks_once_created(sls_server: SlsTestServer, dl: DeadLetterStore) -> None:
    sls_server.projects[PROJECT].pop(LOGSTORE)
    sink = make_sink(sls_server)
    run = Run(sink, dl)
    run.start(numbered_lines(5))
    await until(lambda: run.runner.state == "blocked", what="blocked")
    from tests.support.sls_server import Logstore

    sls_server.projects[PROJECT][LOGSTORE] = Logstore(LOGSTORE)
    await run.wait()
    assert run.ledger.offset(1) == run.end and len(sls_server.logs(LOGSTORE)) == 5


@pytest.mark.asyncio
async def test_post_body_too_large_splits_until_the_server_takes_it(dl: DeadLetterStore) -> None:
    with SlsTestServer(max_raw_bytes=200 << 10) as sls_server:
        sink = make_sink(sls_server)  # sink thinks 5 MiB is fine; this server takes 200 KiB
        lines = numbered_lines(3000)
        run = Run(sink, dl)
        await run(lines)
        assert sink.error_codes["PostBodyTooLarge"] >= 1
        assert all(g["raw_size"] <= 200 << 10 for g in sls_server.groups(LOGSTORE))
        assert sorted(r["auditID"] for r in sls_server.logs(LOGSTORE)) == sorted(json.loads(x)["auditID"] for x in lines)
        assert run.ledger.offset(1) == run.end and run.dead() == []


@pytest.mark.asyncio
async def test_large_batches_go_out_as_several_requests_within_the_limits(sls_server: SlsTestServer, dl: DeadLetterStore) -> None:
    lines = numbered_lines(9000)
    big = BatchConfig(max_events=20_000, max_bytes=64 << 20, max_wait_ms=3_600_000)
    run = Run(make_sink(sls_server), dl, batch=big)
    await run(lines)
    groups = sls_server.groups(LOGSTORE)
    assert len(groups) >= 3 and all(len(g["logs"]) <= 4096 and g["raw_size"] <= 5 << 20 for g in groups)
    assert len(sls_server.logs(LOGSTORE)) == 9000 and run.ledger.offset(1) == run.end


@pytest.mark.asyncio
async def test_a_multi_megabyte_event_arrives_trimmed_and_annotated(sls_server: SlsTestServer, dl: DeadLetterStore) -> None:
    event = json.loads(numbered_lines(1)[0])
    event["level"] = "RequestResponse"
    event["requestObject"] = {"kind": "Secret", "data": {"x": "A" * (6 << 20)}}
    event["responseObject"] = {"kind": "Secret", "data": {"x": "B" * (3 << 20)}}
    rec = json.dumps(event).encode()
    run = Run(make_sink(sls_server), dl)
    await run([numbered_lines(1, start=1)[0], rec])
    rows = sls_server.logs(LOGSTORE)
    assert [r["auditID"] for r in rows] == ["t-000000001", event["auditID"]]
    big = rows[1]
    assert big["level"] == "Metadata" and "requestObject" not in big and "responseObject" not in big
    assert "removed requestObject" in field(big, f"annotations.{TRUNCATED_ANNOTATION}")
    assert field(big, "objectRef.resource") == event["objectRef"]["resource"]
    assert run.dead() == [] and run.ledger.offset(1) == run.end


@pytest.mark.asyncio
async def test_a_poison_event_is_bisected_out_and_dead_lettered_alone(sls_server: SlsTestServer, dl: DeadLetterStore) -> None:
    lines = numbered_lines(40)
    bad_id = json.loads(lines[17])["auditID"]
    sls_server.poison = lambda c: "InvalidKey" if c.get("auditID") == bad_id else None
    run = Run(make_sink(sls_server), dl)
    await run(lines)
    stored = sorted(r["auditID"] for r in sls_server.logs(LOGSTORE))
    assert bad_id not in stored and len(stored) == 39
    (dead,) = run.dead()
    assert bad_id.encode() in dead["event"] if isinstance(dead.get("event"), bytes) else bad_id in json.dumps(dead)
    assert "InvalidKey" in json.dumps(dead)
    assert run.ledger.offset(1) == run.end


@pytest.mark.asyncio
async def test_shard_routing_by_hash_key(sls_server: SlsTestServer, dl: DeadLetterStore) -> None:
    run = Run(make_sink(sls_server, shard_hash_key="cp-1"), dl)
    await run(numbered_lines(3))
    (put,) = sls_server.putlogs()
    assert put.path.endswith("/shards/route") and len(put.params["key"]) == 32
    assert sls_server.groups(LOGSTORE)[0]["route_key"] == put.params["key"]


@pytest.mark.asyncio
async def test_https_verifies_the_endpoint_certificate(dl: DeadLetterStore, tmp_path: Path) -> None:
    import ssl

    import trustme  # a test dependency (the Loki tests use it too)

    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    with SlsTestServer(tls=ctx) as sls_server:
        assert sls_server.url.startswith("https://")
        untrusted = make_sink(sls_server)
        (req,) = untrusted.encode(numbered_lines(2))
        try:
            result: Any = await untrusted.send(req)
        except Exception as exc:
            result = exc
        await untrusted.aclose()
        outcome = untrusted.classify(req, result)
        assert type(outcome).__name__ == "Blocked" and "TLS" in outcome.reason  # type: ignore[union-attr]
        pem = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(pem))
        run = Run(make_sink(sls_server, tls={"ca_file": str(pem)}), dl)
        await run(numbered_lines(5))
        assert len(sls_server.logs(LOGSTORE)) == 5 and run.ledger.offset(1) == run.end
        skipping = Run(make_sink(sls_server, tls={"insecure_skip_verify": True}), dl)  # a test endpoint only
        await skipping(numbered_lines(3, start=5))
        assert len(sls_server.logs(LOGSTORE)) == 8

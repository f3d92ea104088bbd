"""The S3 sink against a real S3 server (SeaweedFS on 127.0.0.1, signatures and checksums checked):
objects round-trip, keys and partitions, multipart, SSE/tags/storage class, blocking errors, throttling
and cut connections injected by a byte-exact proxy, staged objects left by a crash."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import os
import re
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zstandard

from kube_audit_shipper.delivery.contract import Delivered
from kube_audit_shipper.demo.events import AuditEventGenerator, EventMix
from kube_audit_shipper.sinks.s3.config import S3SinkConfig
from kube_audit_shipper.sinks.s3.keys import event_time
from kube_audit_shipper.sinks.s3.sink import S3Sink
from tests.support.corpus import REPO, audit_id, numbered_lines
from tests.support.s3_server import (
    ADMIN,
    READER,
    Fault,
    FaultProxy,
    SeaweedS3,
    bulky_lines,
    incomplete_uploads,
    new_bucket,
    read_objects,
    s3_client,
)
from tests.support.sink_context import context, working
from tests.support.wait import until, until_blocking

pytestmark = pytest.mark.asyncio

MiB = 1 << 20
FAST_RETRY = {"initial_ms": 20, "max_ms": 300, "multiplier": 2.0}
KEY_RE = re.compile(r"^audit/cluster=c0123/dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/cp-1-(\d{8}T\d{6}Z)-(\d{6})-[0-9a-f]{8}\.ndjson\.(zst|gz)$")


def make_sink(server: SeaweedS3, bucket: str, state: Path, *, endpoint: str | None = None, node: str = "cp-1", **kw: Any) -> S3Sink:
    cfg = msgspec.convert(
        {**server.sink_config(bucket, key_fields={"cluster_id": "c0123"}, retry=FAST_RETRY), **({"endpoint": endpoint} if endpoint else {}), **kw}, S3SinkConfig
    )
    return S3Sink(cfg, context(state, node=node))


def within(seconds: float) -> float:
    """A deadline for aclose: `seconds` from now."""
    return time.monotonic() + seconds


async def stage(sink: S3Sink, lines: list[bytes], batch: int = 200) -> None:
    for i in range(0, len(lines), batch):
        for req in await asyncio.to_thread(sink.encode, lines[i : i + batch]):
            assert sink.classify(req, await sink.send(req)) == Delivered()


def object_lines(body: bytes, codec: str = "zstd") -> list[bytes]:
    if codec == "gzip":
        return gzip.decompress(body).splitlines()
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True).read().splitlines()


def ids(objects: dict[str, bytes], codec: str = "zstd") -> list[str]:
    return [audit_id(x) for body in objects.values() for x in object_lines(body, codec)]


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
async def test_objects_round_trip_real_and_generated_events(s3_server: SeaweedS3, tmp_path: Path, codec: str) -> None:
    bucket = await new_bucket(s3_server.endpoint)
    ext = "zst" if codec == "zstd" else "gz"
    template = f"audit/cluster={{cluster_id}}/dt=%Y-%m-%d/hour=%H/{{node}}-{{first_ts}}-{{seq}}.ndjson.{ext}"
    sink = make_sink(s3_server, bucket, tmp_path, compression=codec, key_template=template)
    gen = AuditEventGenerator(seed=5, start_time=datetime(2026, 11, 22, 10, 0, tzinfo=UTC))
    lines = numbered_lines(700, prefix="rt") + list(gen.lines(1500))
    async with working(sink):
        await stage(sink, lines)
        assert sink.staged_objects >= 1  # the last object stays open until object_max_age_s or the stop
        await sink.aclose()
    objects = await read_objects(s3_server.endpoint, bucket)
    assert sorted(ids(objects, codec)) == sorted(audit_id(x) for x in lines)  # every event, once
    for key in objects:
        assert KEY_RE.match(key), key
    assert sink.upload_state == "ok" and sink.staged_objects == 0 and sink.uploader.objects_uploaded == len(objects)
    assert sorted(p.name for p in sink.staging.dir.iterdir()) == ["seq"]


async def test_keys_and_partitions_follow_each_objects_first_event(s3_server: SeaweedS3, tmp_path: Path) -> None:
    bucket = await new_bucket(s3_server.endpoint)
    sink = make_sink(s3_server, bucket, tmp_path)
    start = datetime(2026, 11, 22, 9, 40, tzinfo=UTC)
    lines = list(AuditEventGenerator(seed=8, start_time=start, mix=EventMix(events_per_second=0.5)).lines(3000))  # ~100 min
    async with working(sink):
        await stage(sink, lines, batch=250)
        await sink.aclose()
    objects = await read_objects(s3_server.endpoint, bucket)
    assert len(objects) == 3  # 09:40-09:59, 10:00-10:59, 11:00-11:20: one object per hour partition
    seqs = []
    for key in sorted(objects, key=lambda k: KEY_RE.match(k).group(4)):  # type: ignore[union-attr]
        m = KEY_RE.match(key)
        assert m is not None
        body = object_lines(objects[key])
        times = [event_time(x) for x in body]
        first = times[0]
        assert first is not None
        assert (m.group(1), m.group(2), m.group(3)) == (first.strftime("%Y-%m-%d"), first.strftime("%H"), first.strftime("%Y%m%dT%H%M%SZ"))
        assert {t.strftime("%H") for t in times if t} == {m.group(2)}  # the object holds one hour
        seqs.append(int(m.group(4)))
    assert seqs == [1, 2, 3]
    assert sum(len(object_lines(b)) for b in objects.values()) == len(lines)


@pytest.mark.parametrize("checksum", ["md5", "crc32"])
async def test_multipart_upload_of_several_parts_with_sse_tags_and_storage_class(s3_server: SeaweedS3, tmp_path: Path, checksum: str) -> None:
    bucket = await new_bucket(s3_server.endpoint)
    lines = bulky_lines(4200, prefix=f"mp-{checksum}")
    with FaultProxy(s3_server.port) as proxy:
        sink = make_sink(
            s3_server, bucket, tmp_path, endpoint=proxy.endpoint, object_max_bytes=12 * MiB, part_size_bytes=5 * MiB, checksum=checksum,
            sse="AES256", storage_class="STANDARD_IA", tags={"retention": "400d", "source": "kube-audit"},
        )  # fmt: skip
        async with working(sink):
            await stage(sink, lines, batch=250)
            await sink.aclose()
    objects = await read_objects(s3_server.endpoint, bucket)
    assert sorted(ids(objects)) == sorted(audit_id(x) for x in lines)
    assert proxy.ops.count("CreateMultipartUpload") == 1 and proxy.ops.count("CompleteMultipartUpload") == 1
    assert proxy.ops.count("UploadPart") == 3 and proxy.ops.count("PutObject") == 1  # 5 + 5 + ~2 MiB, then the rest
    assert sink.uploader.parts_uploaded == 3
    async with s3_client(s3_server.endpoint) as c:
        for key in objects:
            head = await c.head_object(Bucket=bucket, Key=key)
            assert head["ServerSideEncryption"] == "AES256" and head["StorageClass"] == "STANDARD_IA" and head["ContentType"] == "application/zstd"
            tags = (await c.get_object_tagging(Bucket=bucket, Key=key))["TagSet"]
            assert {t["Key"]: t["Value"] for t in tags} == {"retention": "400d", "source": "kube-audit"}
        big = max(objects, key=lambda k: len(objects[k]))
        assert (await c.head_object(Bucket=bucket, Key=big))["ETag"].endswith('-3"')


@pytest.mark.parametrize(
    ("creds", "missing_bucket", "code"),
    [
        ((ADMIN[0], "not-the-secret"), False, "SignatureDoesNotMatch"),
        (("AKUNKNOWN00000000000", ADMIN[1]), False, "InvalidAccessKeyId"),
        (READER, False, "AccessDenied"),
        (ADMIN, True, "NoSuchBucket"),
    ],
)
async def test_blocking_errors_keep_the_data_staged_until_fixed(
    s3_server: SeaweedS3, tmp_path: Path, caplog: pytest.LogCaptureFixture, creds: tuple[str, str], missing_bucket: bool, code: str
) -> None:
    bucket = f"missing-{code.lower()}-{tmp_path.name[-6:].lower()}".replace("_", "-") if missing_bucket else await new_bucket(s3_server.endpoint)
    lines = numbered_lines(300, prefix=code)
    sink = make_sink(s3_server, bucket, tmp_path, access_key_id=creds[0], secret_access_key=creds[1])
    async with working(sink):
        await stage(sink, lines)
        staged = sink.staged_objects
        caplog.set_level(logging.ERROR, logger="kube_audit_shipper.sinks.s3")
        closing = asyncio.ensure_future(sink.aclose(within(1.0)))
        await until(lambda: sink.upload_state == "blocked", timeout_s=10, what="blocked state")
        assert code in (sink.upload_error or "")
        await closing
    blocked_logs = [r for r in caplog.records if r.getMessage().startswith("s3 uploads blocked")]
    assert len(blocked_logs) == 1 and code in blocked_logs[0].reason  # type: ignore[attr-defined]  # once a minute
    assert sink.uploader.retries >= 2 and sink.staged_objects == staged and sink.uploader.objects_uploaded == 0  # all kept
    if missing_bucket:
        async with s3_client(s3_server.endpoint) as c:
            await c.create_bucket(Bucket=bucket)
    fixed = make_sink(s3_server, bucket, tmp_path)
    async with working(fixed):
        await fixed.aclose()  # uploads what the blocked run left staged
    assert sorted(ids(await read_objects(s3_server.endpoint, bucket))) == sorted(audit_id(x) for x in lines)


async def test_throttling_and_5xx_are_retried_per_call(s3_server: SeaweedS3, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bucket = await new_bucket(s3_server.endpoint)
    lines = bulky_lines(4200, prefix="slow")
    caplog.set_level(logging.WARNING, logger="kube_audit_shipper.sinks.s3")
    with FaultProxy(s3_server.port) as proxy:
        for fault in (
            Fault("CreateMultipartUpload", "slowdown"),
            Fault("UploadPart", "slowdown", times=2, after=1),
            Fault("CompleteMultipartUpload", "slowdown"),
            Fault("PutObject", "slowdown", times=3),
        ):
            proxy.add(fault)
        sink = make_sink(s3_server, bucket, tmp_path, endpoint=proxy.endpoint, object_max_bytes=12 * MiB, part_size_bytes=5 * MiB)
        async with working(sink):
            await stage(sink, lines, batch=250)
            await sink.aclose()
        assert all(f.applied == f.times for f in proxy.faults)
    assert sorted(ids(await read_objects(s3_server.endpoint, bucket))) == sorted(audit_id(x) for x in lines)
    assert sink.uploader.retries == 7 and sink.upload_state == "ok"
    assert proxy.ops.count("UploadPart") == 3 + 2 and proxy.ops.count("CreateMultipartUpload") == 2  # only failed calls repeat
    warnings = [r for r in caplog.records if r.getMessage() == "s3 call failed; retrying"]
    assert len(warnings) == 7 and all("SlowDown (HTTP 503)" in r.reason for r in warnings)  # type: ignore[attr-defined]


@pytest.mark.parametrize("multipart", [False, True])
async def test_an_upload_cut_midway_is_retried_and_never_visible_partially(s3_server: SeaweedS3, tmp_path: Path, multipart: bool) -> None:
    bucket = await new_bucket(s3_server.endpoint)
    lines = bulky_lines(2200, prefix="cut") if multipart else numbered_lines(500, prefix="cut")
    with FaultProxy(s3_server.port) as proxy:
        # cut twice: aiohttp itself resends once on a kept-alive connection the server dropped; the second cut
        # reaches the sink, which sends the part or object again from the staged file
        if multipart:
            cut, held = proxy.add(Fault("UploadPart", "reset", times=2, after=1)), proxy.add(Fault("CompleteMultipartUpload", "hold"))
        else:
            cut, held = proxy.add(Fault("PutObject", "reset", times=2)), proxy.add(Fault("PutObject", "hold"))
        sink = make_sink(s3_server, bucket, tmp_path, endpoint=proxy.endpoint, object_max_bytes=8 * MiB, part_size_bytes=5 * MiB)
        async with working(sink):
            await stage(sink, lines, batch=250)
            closing = asyncio.ensure_future(sink.aclose())
            await until(lambda: held.applied == 1, timeout_s=20, what="the retried upload to reach the server")
            assert cut.applied == 2
            assert await read_objects(s3_server.endpoint, bucket) == {}  # nothing visible, not even part of it
            held.released.set()
            await closing
    objects = await read_objects(s3_server.endpoint, bucket)
    assert sorted(ids(objects)) == sorted(audit_id(x) for x in lines)
    assert sink.uploader.retries in (1, 2) and sink.upload_state == "ok"
    if multipart:
        assert proxy.ops.count("UploadPart") == 2 + 2 and sink.uploader.parts_uploaded == 2


async def test_the_object_sealed_at_stop_is_uploaded_whenever_the_uploader_looks(s3_server: SeaweedS3, tmp_path: Path) -> None:
    """Regression (a CI flake): the uploader ended when it looked between the stop's start and its seal of the
    object being filled, so that object stayed staged. Here it looks exactly then: its first look for a sealed
    object comes while the stop is sealing (its start-up call, ListMultipartUploads, is answered from inside the
    seal); it must wait for that seal and upload the object."""
    bucket = await new_bucket(s3_server.endpoint)
    lines = bulky_lines(300, prefix="seal")  # one hour: one object
    with FaultProxy(s3_server.port) as proxy:
        listing = proxy.add(Fault("ListMultipartUploads", "hold"))
        sink = make_sink(s3_server, bucket, tmp_path, endpoint=proxy.endpoint)
        looks = [0]
        next_sealed, seal = sink.staging.next_sealed, sink.staging.seal

        def counted() -> Any:
            looks[0] += 1
            return next_sealed()

        async with working(sink) as uploader:

            def seal_after_the_uploader_looked() -> bool:
                listing.released.set()  # the uploader goes on from its start-up call now, while this seal runs
                until_blocking(lambda: looks[0] >= 2 or uploader.done(), timeout_s=20, what="the uploader to look for sealed objects")
                return seal()

            sink.staging.next_sealed = counted  # type: ignore[method-assign]
            sink.staging.seal = seal_after_the_uploader_looked  # type: ignore[method-assign]
            await stage(sink, lines)
            await until(lambda: listing.applied == 1, timeout_s=20, what="the uploader's start-up call")
            assert looks[0] == 0 and sink.staged_objects == 1
            await sink.aclose()
            assert not uploader.cancelled()
    assert sink.staged_objects == 0 and sorted(ids(await read_objects(s3_server.endpoint, bucket))) == sorted(audit_id(x) for x in lines)


async def test_staged_objects_left_by_a_crash_are_uploaded_at_start_once(s3_server: SeaweedS3, tmp_path: Path) -> None:
    bucket = await new_bucket(s3_server.endpoint)
    lines = list(AuditEventGenerator(seed=11, start_time=datetime(2026, 11, 22, 10, 0, tzinfo=UTC)).lines(1200))

    def crashed_run() -> S3Sink:  # what send() does, in a process that dies before any upload
        sink = make_sink(s3_server, bucket, tmp_path)  # its background work is not run: no upload
        for i in range(0, len(lines), 200):
            for req in sink.encode(lines[i : i + 200]):
                sink.staging.append(req.payload, first_time=req.meta["first_time"], partition=req.meta["partition"], values=req.meta["values"])
            if i == 400:
                sink.staging.seal()
        torn = sink.encode(numbered_lines(100, prefix="torn"))[0].payload
        with sink.staging._current.data.open("ab") as fh:  # type: ignore[union-attr]
            fh.write(torn[: len(torn) // 3])  # killed in the middle of a batch's write: never acknowledged
        sink.staging.close()
        return sink

    first = await asyncio.to_thread(crashed_run)
    backup = tmp_path / "backup"
    shutil.copytree(first.staging.dir, backup)

    after_crash = make_sink(s3_server, bucket, tmp_path)
    assert after_crash.staging.recovered_objects == 2 and after_crash.staging.cut_bytes > 0
    async with working(after_crash):  # uploads at once, no event needed
        await until(lambda: after_crash.staged_objects == 0, timeout_s=20, what="recovered objects uploaded")
        await after_crash.aclose()
    uploaded = await read_objects(s3_server.endpoint, bucket)
    assert sorted(ids(uploaded)) == sorted(audit_id(x) for x in lines)

    # a crash after the upload succeeded but before the staged files were removed: not uploaded again
    shutil.rmtree(after_crash.staging.dir)
    shutil.copytree(backup, after_crash.staging.dir)
    with FaultProxy(s3_server.port) as proxy:
        again = make_sink(s3_server, bucket, tmp_path, endpoint=proxy.endpoint)
        async with working(again):
            await again.aclose()
    assert proxy.ops.count("HeadObject") == 2 and "PutObject" not in proxy.ops and again.staged_objects == 0

    # the key is taken by another object (state of another agent, hand-made object): never overwritten
    shutil.rmtree(again.staging.dir)
    shutil.copytree(backup, again.staging.dir)
    taken = min(uploaded)
    async with s3_client(s3_server.endpoint) as c:
        await c.put_object(Bucket=bucket, Key=taken, Body=b"someone else's object")
    third = make_sink(s3_server, bucket, tmp_path)
    async with working(third):
        await third.aclose()
    objects = await read_objects(s3_server.endpoint, bucket)
    assert objects[taken] == b"someone else's object" and len(objects) == 3
    assert sorted(ids({k: v for k, v in objects.items() if k != taken})) == sorted(audit_id(x) for x in lines)


CHILD = """
import asyncio, json, sys, time
import msgspec
from kube_audit_shipper.sinks.registry import sink_context
from kube_audit_shipper.sinks.s3.config import S3SinkConfig
from kube_audit_shipper.sinks.s3.sink import S3Sink

async def main(args):
    sink = S3Sink(msgspec.convert(args["config"], S3SinkConfig), sink_context(node="cp-1", state_dir=args["state_dir"]))
    uploads = asyncio.get_running_loop().create_task(sink.run_background())
    lines = open(args["lines"], "rb").read().splitlines()
    for i in range(0, len(lines), 250):
        for req in await asyncio.to_thread(sink.encode, lines[i : i + 250]):
            await sink.send(req)
    await sink.aclose(time.monotonic() + 600)
    await uploads

asyncio.run(main(json.loads(sys.argv[1])))
"""


async def test_restart_in_the_middle_of_a_multipart_upload(s3_server: SeaweedS3, tmp_path: Path) -> None:
    bucket = await new_bucket(s3_server.endpoint)
    lines = bulky_lines(4200, prefix="kill")
    (tmp_path / "lines").write_bytes(b"\n".join(lines))
    with FaultProxy(s3_server.port) as proxy:
        held = proxy.add(Fault("UploadPart", "hold", after=2))  # parts 1 and 2 go through, part 3 never answers
        config = {
            **s3_server.sink_config(bucket, key_fields={"cluster_id": "c0123"}),
            "endpoint": proxy.endpoint,
            "object_max_bytes": 12 * MiB,
            "part_size_bytes": 5 * MiB,
        }
        args = json.dumps({"config": config, "state_dir": str(tmp_path), "lines": str(tmp_path / "lines")})
        with (tmp_path / "child.log").open("wb") as log:
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, args, cwd=REPO, env=env, stdout=log, stderr=log)
            try:
                await until(lambda: held.applied == 1 or child.returncode is not None, timeout_s=60, what="the third part to be sent")
                assert child.returncode is None, (tmp_path / "child.log").read_text()
            finally:
                child.kill()  # SIGKILL: no abort, no cleanup
                await child.wait()
        uploads = await incomplete_uploads(s3_server.endpoint, bucket)
        assert len(uploads) == 1
        async with s3_client(s3_server.endpoint) as c:
            parts = await c.list_parts(Bucket=bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"])
        assert [p["PartNumber"] for p in parts["Parts"]] == [1, 2]

    restarted = make_sink(s3_server, bucket, tmp_path)
    assert restarted.staging.recovered_objects == 2
    async with working(restarted):
        await restarted.aclose()
    assert restarted.uploader.multipart_aborted == 1
    assert await incomplete_uploads(s3_server.endpoint, bucket) == []
    objects = await read_objects(s3_server.endpoint, bucket)
    assert len(objects) == 2 and uploads[0]["Key"] in objects
    assert sorted(ids(objects)) == sorted(audit_id(x) for x in lines)  # every event, once


@pytest.mark.parametrize("source", ["environment", "shared_profile"])
async def test_credentials_from_the_sdk_chain(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    bucket = await new_bucket(s3_server.endpoint)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    extra: dict[str, Any] = {}
    if source == "environment":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ADMIN[0])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ADMIN[1])
    else:
        (tmp_path / "credentials").write_text(f"[audit]\naws_access_key_id = {ADMIN[0]}\naws_secret_access_key = {ADMIN[1]}\n")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
        extra["profile"] = "audit"
    cfg = {k: v for k, v in s3_server.sink_config(bucket, key_fields={"cluster_id": "c0123"}).items() if k not in ("access_key_id", "secret_access_key")}
    sink = S3Sink(msgspec.convert({**cfg, **extra}, S3SinkConfig), context(tmp_path))
    lines = numbered_lines(100, prefix=source)
    async with working(sink):
        await stage(sink, lines)
        await sink.aclose()
    assert sorted(ids(await read_objects(s3_server.endpoint, bucket))) == sorted(audit_id(x) for x in lines)

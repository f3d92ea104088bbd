"""A fault-injecting HTTP backend and a sink that talks to it, for delivery tests.

FaultServer is a small HTTP/1.1 server (asyncio streams, in a thread of its own, on 127.0.0.1) that
ingests NDJSON audit events. What it answers is scripted, request by request:

    OK                     store every record, 200
    slow(s)                wait s seconds, then as OK (stored even if the client gave up meanwhile)
    status(code, ...)      answer `code` (500, 503, 429 + Retry-After, 401, 404, 413 ...), store nothing
    RESET                  close the connection with a TCP RST, no answer
    HANG                   never answer (the client times out); store nothing
    down() / up()          stop / start listening on the same port (connection refused meanwhile)

Scripted actions are taken from `push(...)` first, then from `rule(ids, n)` (ids: the auditIDs of the
request, n: the request number from 1), then `default`. Independently of the action, `reject(id)`
names records the backend refuses for good: an OK request holding some answers 400 with the list
`{"rejected": [{"index": k, "auditID": id, "reason": r}], "stored": true}` and stores the others
(`partial_store=False`: stores nothing, `"stored": false`). `max_body` answers 413 to larger bodies.

The server records what it stored (`stored` counts by auditID, `records` the first copy, `order` the
arrival order) and every request it saw (`hits`: time, ids, action, status), plus the most requests
it ever had in progress at once (`max_inflight`).

FaultSink is a kube_audit_shipper/delivery/contract.py Sink: `send` is one POST with httpx (a timeout, one client,
closed in `aclose`), `classify` maps the answer as a real HTTP sink does: 2xx Delivered; 408, 429, 5xx
and transport errors (refused, reset, timeout) Retry (with Retry-After); 401/403/404 and TLS failures
Blocked; 413 Split; other 4xx Rejected (the listed records, with their reasons, or all of them).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
import msgspec

from kube_audit_shipper.delivery.answers import retry_after
from kube_audit_shipper.delivery.contract import (
    Blocked,
    Delivered,
    Outcome,
    Rejected,
    Reply,
    Request,
    Retry,
    Sink,
    Split,
    split_in_half,
)

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Action:
    kind: str  # ok | status | reset | hang
    status: int = 200
    delay: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


OK = Action("ok")
RESET = Action("reset")
HANG = Action("hang")


def slow(seconds: float) -> Action:
    return Action("ok", delay=seconds)


def status(code: int, *, retry_after: str | float | None = None, body: bytes | None = None, delay: float = 0.0) -> Action:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Action(
        "status", status=code, delay=delay, headers=headers, body=body if body is not None else b'{"error":"%s"}' % _REASONS.get(code, "error").encode()
    )


UNAUTHORIZED = status(401, body=b'{"error":"invalid access key"}')


@dataclass(frozen=True)
class Hit:
    at: float  # time.monotonic() when the request was read
    ids: tuple[str, ...]
    kind: str
    status: int | None  # None: no answer (reset, hang)


def _audit_id(line: bytes) -> str:
    try:
        return str(msgspec.json.decode(line)["auditID"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return f"<undecodable {line[:40]!r}>"


class FaultServer:
    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._lock = threading.Lock()
        self._script: deque[Action] = deque()
        self.default: Action = OK
        self.rule: Callable[[tuple[str, ...], int], Action | None] | None = None
        self.reject: Callable[[str], str | None] | None = None
        self.partial_store = True
        self.max_body: int | None = None
        self.stored: Counter[str] = Counter()
        self.records: dict[str, bytes] = {}
        self.order: list[str] = []
        self.hits: list[Hit] = []
        self.requests = 0
        self.inflight = 0
        self.max_inflight = 0
        self.bodies_stored = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- life cycle (called from the test's thread) ----------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/ingest"

    def start(self) -> Self:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fault-server", daemon=True)
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        if self._loop is None:
            return
        self._call(self._shutdown(drop_connections=True))
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def down(self) -> None:
        """Stop listening and drop every connection: clients get connection refused / reset."""
        self._call(self._shutdown(drop_connections=True))

    def up(self) -> None:
        self._call(self._listen())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- scripting -------------------------------------------------------------------------------
    def push(self, *actions: Action) -> None:
        with self._lock:
            self._script.extend(actions)

    def fail_next(self, n: int, action: Action) -> None:
        self.push(*([action] * n))

    def snapshot(self) -> tuple[Counter[str], list[Hit]]:
        with self._lock:
            return Counter(self.stored), list(self.hits)

    def stored_ids(self) -> set[str]:
        with self._lock:
            return set(self.stored)

    def stored_count(self) -> int:
        with self._lock:
            return len(self.stored)

    # -- serving (server thread) -----------------------------------------------------------------
    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self, *, drop_connections: bool) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if drop_connections:
            for w in list(self._writers):
                w.transport.abort()
            tasks = list(self._conns)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self._writers.add(writer)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                if not await self._respond(request, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
        line = await reader.readline()
        if not line:
            return None
        length = 0
        while True:
            h = await reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return await reader.readexactly(length)

    def _choose(self, ids: tuple[str, ...]) -> Action:
        with self._lock:
            self.requests += 1
            n = self.requests
            if self._script:
                return self._script.popleft()
        if self.rule is not None:
            action = self.rule(ids, n)
            if action is not None:
                return action
        return self.default

    async def _respond(self, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        lines = [x for x in body.split(b"\n") if x]
        ids = tuple(_audit_id(x) for x in lines)
        at = time.monotonic()
        action = self._choose(ids)
        if self.max_body is not None and len(body) > self.max_body:
            action = status(413, body=b'{"error":"body of %d bytes over the %d limit"}' % (len(body), self.max_body))
        with self._lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        code: int | None = None
        try:
            if action.delay:
                await asyncio.sleep(action.delay)
            if action.kind == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return False
            if action.kind == "hang":
                await reader.read()  # until the client gives up and closes
                return False
            if action.kind == "status":
                code, payload, headers = action.status, action.body, dict(action.headers)
            else:
                code, payload = self._store(lines, ids)
                headers = {}
            head = f"HTTP/1.1 {code} {_REASONS.get(code, 'Status')}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            writer.write(head.encode() + payload)
            await writer.drain()
            return True
        finally:
            with self._lock:
                self.inflight -= 1
                self.hits.append(Hit(at, ids, action.kind, code))

    def _store(self, lines: list[bytes], ids: tuple[str, ...]) -> tuple[int, bytes]:
        rejected = []
        if self.reject is not None:
            for k, audit_id in enumerate(ids):
                why = self.reject(audit_id)
                if why is not None:
                    rejected.append({"index": k, "auditID": audit_id, "reason": why})
        store = not rejected or self.partial_store
        with self._lock:
            if store:
                bad = {r["index"] for r in rejected}
                for k, (line, audit_id) in enumerate(zip(lines, ids)):
                    if k in bad:
                        continue
                    self.stored[audit_id] += 1
                    if audit_id not in self.records:
                        self.records[audit_id] = line
                        self.order.append(audit_id)
                self.bodies_stored += 1
        if rejected:
            return 400, json.dumps({"error": f"{len(rejected)} record(s) rejected", "rejected": rejected, "stored": store}).encode()
        return 200, b""


# -- the sink ---------------------------------------------------------------------------------------


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class FaultSink(Sink):
    """A contract sink that POSTs NDJSON to FaultServer (or any URL) and classifies like an HTTP sink."""

    def __init__(self, name: str, url: str, *, timeout: float = 2.0, max_concurrency: int | None = None, max_request_records: int | None = None) -> None:
        self.name = name
        self.url = url
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.max_request_records = max_request_records
        self._client: httpx.AsyncClient | None = None
        self.sends = 0
        self.outcomes: Counter[str] = Counter()

    def _request(self, records: list[bytes], indices: Sequence[int]) -> Request:
        idx = list(indices)
        data = b"".join(records[i] + b"\n" for i in idx)
        return Request(payload=data, indices=idx, headers={"content-type": "application/x-ndjson"}, raw_bytes=len(data))

    def encode(self, records: list[bytes]) -> list[Request]:
        step = self.max_request_records or max(1, len(records))
        return [self._request(records, range(i, min(i + step, len(records)))) for i in range(0, len(records), step)]

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        halves = split_in_half(request)
        return [] if halves is None else [self._request(records, h) for h in halves]

    async def send(self, request: Request) -> Reply:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        self.sends += 1
        r = await self._client.post(self.url, content=request.payload, headers=request.headers)
        return Reply(r.status_code, r.headers, r.content)

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        outcome = self._classify(request, result)
        self.outcomes[type(outcome).__name__] += 1
        return outcome

    def _classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        if isinstance(result, Reply):
            code = result.status
            text = result.body[:200].decode("utf-8", "replace")
            if 200 <= code < 300:
                return Delivered()
            if code == 413:
                return Split(f"HTTP 413: {text}")
            if code in (401, 403, 404):
                return Blocked(f"HTTP {code}: {text}")
            if code in (408, 429) or code >= 500:
                return Retry(f"HTTP {code}: {text}", after_s=retry_after(result.headers))
            if 400 <= code < 500:
                try:
                    doc = json.loads(result.body)
                except ValueError:
                    doc = None
                listed = doc.get("rejected") if isinstance(doc, dict) else None
                if isinstance(listed, list) and listed:
                    reasons = {request.indices[int(r["index"])]: str(r.get("reason", "rejected")) for r in listed}
                    return Rejected(f"HTTP {code}: {doc.get('error', text)}", indices=sorted(reasons), retry_rest=not doc.get("stored", True), reasons=reasons)
                return Rejected(f"HTTP {code}: {text}", indices=list(request.indices))
            return Retry(f"unexpected HTTP {code}")
        if isinstance(result, httpx.TimeoutException):
            return Retry(f"timeout ({type(result).__name__}) after {self.timeout}s")
        if _is_tls_failure(result):
            return Blocked(f"TLS failure: {result}")
        return Retry(f"{type(result).__name__}: {result}")

    async def aclose(self, deadline: float | None = None) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

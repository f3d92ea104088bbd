"""A Loki push API for tests, answering as Grafana Loki v3.7.6 with stock limits does (single binary, one ingester).

Built from `shared/reference/loki-and-s3-backends.md` §3 (observed answers, bodies verbatim) and Loki's push
path: `POST /loki/api/v1/push`, snappy-compressed protobuf `logproto.PushRequest` (decoded with the protobuf
library from the official schema, built here as a descriptor) or JSON (optionally gzip); then, in Loki's order:

1. request decoding: Content-Encoding, `mime: no media type`, `snappy: corrupt input`, `EOF`, proto and JSON
   errors, `couldn't parse labels: …` (one bad label set rejects the whole request): 400, nothing stored;
2. distributor, per stream: `service_name` added (not counted in the 15 label names), label count and lengths,
   then per entry: too old (168 h), too new (10 min grace), line over 262144 bytes, structured metadata; bad
   streams and entries are dropped, the rest goes on; messages grouped as Loki's GroupedErrors does
   (`N errors like: …` joined by `; `);
3. tenant ingestion rate (4 MiB/s, burst 6 MiB, token bucket on line + metadata bytes): 429, nothing stored;
4. the gRPC message to the ingester over 4 MiB: 500 ResourceExhausted, nothing stored;
5. ingester, per stream: exact duplicates (same timestamp and line) dropped silently, entries older than the
   stream's newest − max_chunk_age/2 (1 h) refused (400), whole-stream rate limit (3 MiB/s, burst 15 MiB: 429);
   only the *last* stream's error is returned, as Loki's instance.Push does;
6. answer: the ingester's error, else the distributor's 400 (valid streams stored: partial success), else 204.

Bodies are text/plain, one message ending in a newline; no Retry-After ever. Not modelled: stream sharding,
`detected_level`, OTLP, query APIs. In front of Loki an optional gateway checks basic or bearer auth (401) and
can answer scripted faults (`inject`, `fault_rule`), e.g. a proxy's 503 with Retry-After.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec

from tests.support.loki_wire import (
    Clock,
    Entry,
    LabelError,
    ManualClock,
    Reject,
    TokenBucket,
    datasize,
    decode_push,
    go_time,
    grouped,
    labels_string,
    parse_labels,
    push_request_class,
    rfc3339,
)

__all__ = ["Clock", "Entry", "LokiLimits", "LokiServer", "ManualClock", "Push", "recent_corpus"]
SERVICE_NAME = "service_name"
DISCOVER_SERVICE = (
    "service",
    "app",
    "application",
    "app_name",
    "name",
    "app_kubernetes_io_name",
    "container",
    "container_name",
    "k8s_container_name",
    "component",
    "workload",
    "job",
    "k8s_job_name",
)
Answer = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class LokiLimits:
    max_line_size: int = 262144
    max_label_names_per_series: int = 15
    max_label_name_length: int = 1024
    max_label_value_length: int = 2048
    reject_old_samples_max_age_s: float = 168 * 3600
    creation_grace_period_s: float = 600
    ingestion_rate_bytes: float = 4 << 20
    ingestion_burst_bytes: int = 6 << 20
    per_stream_rate_bytes: float = 3 << 20
    per_stream_burst_bytes: int = 15 << 20
    grpc_max_recv_msg_size: int = 4 << 20
    max_chunk_age_s: float = 7200
    max_returned_errors: int = 10
    allow_structured_metadata: bool = True
    max_structured_metadata_size: int = 64 << 10
    max_structured_metadata_entries: int = 128


@dataclass
class Push:
    """One request as the server saw it: what it decoded (before validation) and what it answered."""

    status: int
    body: str
    headers: dict[str, str]
    tenant: str | None
    streams: list[tuple[str, list[Entry]]] = field(default_factory=list)
    injected: bool = False


@dataclass
class _Stream:
    limiter: TokenBucket
    entries: list[Entry] = field(default_factory=list)
    seen: set[tuple[int, str]] = field(default_factory=set)
    highest: int = 0
    last: tuple[int, str] | None = None


# -- the push path ---------------------------------------------------------------------------------------------
class LokiServer:
    """`with LokiServer() as loki:` serves on 127.0.0.1 (free port, own threads); `loki.url` is the base URL."""

    def __init__(
        self,
        limits: LokiLimits | None = None,
        *,
        clock: Clock | None = None,
        auth_enabled: bool = False,
        basic_auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        fault_rule: Callable[[int], Answer | None] | None = None,
    ) -> None:
        self.limits = limits or LokiLimits()
        self.clock = clock or Clock()
        self.auth_enabled, self.basic_auth, self.bearer_token = auth_enabled, basic_auth, bearer_token
        self.ssl_context, self.fault_rule = ssl_context, fault_rule
        self.pushes: list[Push] = []
        self.handshake_errors: list[str] = []
        self._faults: deque[Answer] = deque()
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._tenants: dict[str, TokenBucket] = {}
        self._message = push_request_class()
        self._lock = threading.Lock()
        self._http: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- test API ----------------------------------------------------------------------------------------------
    def inject(self, status: int, body: str = "", headers: dict[str, str] | None = None, times: int = 1) -> None:
        """Answer the next `times` pushes with this, before Loki sees them (a gateway's or proxy's answer)."""
        data = (body + "\n").encode() if body else b""
        for _ in range(times):
            self._faults.append((status, {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}, data))

    def stored(self, tenant: str = "fake") -> dict[str, list[Entry]]:
        """Stream labels (as Loki prints them, service_name included) -> entries in the order they were stored."""
        with self._lock:
            return {labels: list(s.entries) for (t, labels), s in self._streams.items() if t == tenant and s.entries}

    def lines(self, tenant: str = "fake") -> list[str]:
        return [e.line for entries in self.stored(tenant).values() for e in entries]

    def statuses(self) -> list[int]:
        with self._lock:
            return [p.status for p in self.pushes]

    def received(self) -> list[tuple[str, Entry]]:
        """Every entry of every push Loki decoded, in arrival order, repeats included."""
        with self._lock:
            return [(labels, e) for p in self.pushes if not p.injected for labels, entries in p.streams for e in entries]

    # -- one HTTP request --------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        headers = {k.lower(): v for k, v in headers.items()}
        if path.split("?")[0] != "/loki/api/v1/push":
            return 404, {"Content-Type": "text/plain; charset=utf-8"}, b"404 page not found\n"
        if method != "POST":
            return 405, {}, b""
        with self._lock:
            push = Push(0, "", headers, None)
            self.pushes.append(push)
            answer = self._gateway(headers, len(self.pushes))
            if answer is not None:
                push.injected = True
            else:
                try:
                    answer = self._push(push, headers, body)
                except Reject as exc:
                    answer = exc.status, {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}, (str(exc) + "\n").encode()
            push.status, push.body = answer[0], answer[2].decode("utf-8", "replace")
            return answer

    def _gateway(self, headers: dict[str, str], number: int) -> Answer | None:
        auth = headers.get("authorization", "")
        if self.basic_auth is not None:
            expected = "Basic " + base64.b64encode(f"{self.basic_auth[0]}:{self.basic_auth[1]}".encode()).decode()
            if auth != expected:
                return 401, {"Content-Type": "text/plain; charset=utf-8", "WWW-Authenticate": 'Basic realm="loki"'}, b"401 Unauthorized\n"
        if self.bearer_token is not None and auth != f"Bearer {self.bearer_token}":
            return 401, {"Content-Type": "text/plain; charset=utf-8"}, b"401 Unauthorized\n"
        if self._faults:
            return self._faults.popleft()
        return self.fault_rule(number) if self.fault_rule is not None else None

    def _push(self, push: Push, headers: dict[str, str], body: bytes) -> Answer:
        tenant = headers.get("x-scope-orgid", "") if self.auth_enabled else "fake"
        if not tenant:
            raise Reject(401, "no org id")
        push.tenant = tenant
        streams = decode_push(headers, body, self._message)
        push.streams = streams
        parsed = []
        for labels, entries in streams:  # ParseLokiRequest: one bad label set fails the request
            try:
                parsed.append((parse_labels(labels), entries))
            except LabelError as exc:
                raise Reject(400, f"couldn't parse labels: {exc}") from None
        if not parsed:
            raise Reject(422, "error at least one valid stream is required for ingestion")
        valid, errors = self._validate(parsed)
        if not valid:
            if errors:
                raise Reject(400, grouped(errors))
            return 204, {}, b""
        size = sum(len(e.line) + sum(len(k) + len(v) for k, v in e.metadata) for _, es in valid for e in es)
        lim = self.limits
        bucket = self._tenants.setdefault(tenant, TokenBucket(lim.ingestion_rate_bytes, lim.ingestion_burst_bytes, self.clock))
        if not bucket.allow(size):
            raise Reject(
                429,
                f"ingestion rate limit exceeded for user {tenant} (limit: {int(lim.ingestion_rate_bytes)} bytes/sec) while "
                f"attempting to ingest '{sum(len(es) for _, es in valid)}' lines totaling '{size}' bytes, reduce log volume "
                "or contact your Loki administrator to see if the limit can be increased",
            )
        message = self._message()
        for labels, entries in valid:
            stream = message.streams.add(labels=labels)
            for e in entries:
                stream.entries.add(
                    line=e.line,
                    timestamp={"seconds": e.ts_ns // 10**9, "nanos": e.ts_ns % 10**9},
                    structuredMetadata=[{"name": k, "value": v} for k, v in e.metadata],
                )
        if message.ByteSize() > lim.grpc_max_recv_msg_size:
            raise Reject(
                500,
                f"rpc error: code = ResourceExhausted desc = grpc: received message larger than max ({message.ByteSize()} vs. {lim.grpc_max_recv_msg_size})",
            )
        failure = None
        for labels, entries in valid:
            failure = self._ingest(tenant, labels, entries)  # instance.Push keeps the last stream's answer only
        if failure is not None:
            raise failure
        if errors:
            raise Reject(400, grouped(errors))
        return 204, {}, b""

    def _validate(self, parsed: list[tuple[list[tuple[str, str]], list[Entry]]]) -> tuple[list[tuple[str, list[Entry]]], list[str]]:
        lim, now = self.limits, self.clock.wall_ns()
        too_old, too_new = now - int(lim.reject_old_samples_max_age_s * 1e9), now + int(lim.creation_grace_period_s * 1e9)
        valid, errors = [], []
        for labels, entries in parsed:
            if not entries:
                continue
            names = [k for k, _ in labels]
            if SERVICE_NAME not in names:
                labels = labels + [(SERVICE_NAME, next((v for k in DISCOVER_SERVICE for n, v in labels if n == k), "unknown_service"))]
            text, count = labels_string(labels), len(labels) - 1
            problem = None
            if count > lim.max_label_names_per_series:
                problem = f"entry for stream '{text}' has {count} label names; limit {lim.max_label_names_per_series}"
            for k, v in sorted(labels):
                if problem is None and len(k.encode()) > lim.max_label_name_length:
                    problem = f"stream '{text}' has label name too long: '{k}'"
                elif problem is None and len(v.encode()) > lim.max_label_value_length:
                    problem = f"stream '{text}' has label value too long: '{v}'"
            if problem is None and len(set(names)) != len(names):
                problem = f"stream '{text}' has duplicate label name: '{next(n for n in names if names.count(n) > 1)}'"
            if problem is not None:
                errors.append(problem)
                continue
            kept = []
            for e in entries:
                sm = sum(len(k.encode()) + len(v.encode()) for k, v in e.metadata)
                if e.ts_ns < too_old:
                    errors.append(f"entry for stream '{text}' has timestamp too old: {rfc3339(e.ts_ns)}, oldest acceptable timestamp is: {rfc3339(too_old)}")
                elif e.ts_ns > too_new:
                    errors.append(f"entry for stream '{text}' has timestamp too new: {rfc3339(e.ts_ns)}")
                elif len(e.line.encode()) > lim.max_line_size:
                    errors.append(
                        f"max entry size '{lim.max_line_size}' bytes exceeded for stream '{text}' while adding an entry with length '{len(e.line.encode())}' bytes"
                    )
                elif e.metadata and not lim.allow_structured_metadata:
                    errors.append(
                        f"stream '{text}' includes structured metadata, but this feature is disallowed. Please see `limits_config.structured_metadata` or contact your Loki administrator to enable it."
                    )
                elif e.metadata and sm > lim.max_structured_metadata_size:
                    errors.append(
                        f"stream '{text}' has structured metadata too large: '{sm}' bytes, limit: '{lim.max_structured_metadata_size}' bytes. Please see `limits_config.max_structured_metadata_size` or contact your Loki administrator to increase it."
                    )
                elif len(e.metadata) > lim.max_structured_metadata_entries:
                    errors.append(
                        f"stream '{text}' has too many structured metadata labels: '{len(e.metadata)}', limit: '{lim.max_structured_metadata_entries}'. Please see `limits_config.max_structured_metadata_entries_count` or contact your Loki administrator to increase it."
                    )
                else:
                    kept.append(e)
            if kept:
                valid.append((text, kept))
        return valid, errors

    def _ingest(self, tenant: str, labels: str, entries: list[Entry]) -> Reject | None:
        lim = self.limits
        stream = self._streams.get((tenant, labels))
        if stream is None:
            stream = self._streams[(tenant, labels)] = _Stream(TokenBucket(lim.per_stream_rate_bytes, lim.per_stream_burst_bytes, self.clock))
        failed: list[tuple[Entry, str]] = []
        to_store, valid_bytes, highest, last = [], 0, stream.highest, stream.last
        behind = int(lim.max_chunk_age_s * 1e9 / 2)
        for e in entries:
            if last == (e.ts_ns, e.line):
                continue
            if highest and e.ts_ns < highest - behind:
                failed.append((e, f"entry too far behind, entry timestamp is: {rfc3339(e.ts_ns)}, oldest acceptable timestamp is: {rfc3339(highest - behind)}"))
                continue
            valid_bytes += len(e.line.encode()) + sum(len(k.encode()) + len(v.encode()) for k, v in e.metadata)
            last, highest = (e.ts_ns, e.line), max(highest, e.ts_ns)
            to_store.append(e)
        rate_limited = bool(to_store) and not stream.limiter.allow(valid_bytes)
        if rate_limited:  # all-or-nothing per stream
            failed = [
                (
                    e,
                    (
                        f"Per stream rate limit exceeded (limit: {datasize(lim.per_stream_rate_bytes)}/sec) while attempting to ingest for "
                        f"stream '{labels}' totaling {datasize(len(e.line.encode()))}, consider splitting a stream via additional labels or "
                        "contact your Loki administrator to see if the limit can be increased"
                    ),
                )
                for e in to_store
            ]
            to_store = []
        for e in to_store:
            stream.last, stream.highest = (e.ts_ns, e.line), max(stream.highest, e.ts_ns)
            if (e.ts_ns, e.line) not in stream.seen:
                stream.seen.add((e.ts_ns, e.line))
                stream.entries.append(e)
        if not failed:
            return None
        text = "".join(f"entry with timestamp {go_time(e.ts_ns)} ignored, reason: '{why}',\n" for e, why in failed[: lim.max_returned_errors])
        text += f"user '{tenant}', total ignored: {len(failed)} out of {len(entries)} for stream: {labels}"
        return Reject(429 if rate_limited else 400, text)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._http is not None, "not started"
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> LokiServer:
        self._http = _HTTPServer(self)
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, name="loki-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http is None:
            return
        self._http.shutdown()
        self._http.close_connections()
        self._http.server_close()
        assert self._thread is not None
        self._thread.join(10)
        self._http = None

    def __enter__(self) -> LokiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: _HTTPServer

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Go's net/http: no 40 ms Nagle stalls
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.timeout)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                self.server.loki.handshake_errors.append(f"{type(exc).__name__}: {exc}")
                raise
        super().setup()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, data = self.server.loki.handle(self.command, self.path, dict(self.headers.items()), body)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every connection thread
    allow_reuse_address = True

    def __init__(self, loki: LokiServer) -> None:
        self.loki = loki
        self._conns: set[Any] = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        if loki.ssl_context is not None:
            self.socket = loki.ssl_context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # handshake failures and resets are the client's business; handshake_errors keeps the former


def recent_corpus(lines: list[bytes], *, end_ns: int | None = None, step_ns: int = 1_000_000) -> list[bytes]:
    """Real corpus events with their timestamps moved to just before `end_ns` (default: now), in order.

    The corpus was recorded years ago and Loki refuses entries older than 7 days; everything else is kept.
    """
    end = time.time_ns() if end_ns is None else end_ns
    out = []
    for k, line in enumerate(lines):
        event = msgspec.json.decode(line)
        ts = end - (len(lines) - k) * step_ns
        stamp = datetime.fromtimestamp(ts // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ts % 10**9 // 1000:06d}Z"
        for key in ("stageTimestamp", "requestReceivedTimestamp", "timestamp"):
            if key in event or key == "stageTimestamp":
                event[key] = stamp
        out.append(msgspec.json.encode(event))
    return out

"""`type: sls`: Alibaba Cloud Simple Log Service, native PutLogs, shaped like ACK's own audit logstore.

    POST /logstores/<logstore>/shards/lb            (or /shards/route?key=<hash> with shard_hash_key)
    Host: <project>.<endpoint>                      (or x-log-project for IP endpoints / project_in_host: false)
    Content-Type: application/x-protobuf, Content-MD5 (upper hex of the sent body), Date,
    x-log-apiversion: 0.6.0, x-log-bodyrawsize, x-log-compresstype: lz4 (raw block) | zstd,
    Authorization: LOG <id>:<HMAC-SHA1>  or  SLS4-HMAC-SHA256 ... (signature_version: v4), x-acs-security-token

One LogGroup per request, at most `max_request_logs` (4096) logs and `max_request_bytes` (5 MiB) raw: `encode`
splits a batch at those limits. Each log is one audit event shaped as Logtail's JSON mode does (shape.py), with
`__time__` from the event's own timestamps. The group carries Topic, Source (the node IP) and the tags
`__hostname__`, `__path__`, `__pack_id__` and the configured ones.

Answers (classify), through the delivery engine's outcomes:
    200                                         Delivered
    network errors, timeouts, 5xx, 429, ServerBusy, InternalServerError, RequestTimeout,
    WriteQuotaExceed, ShardWriteQuotaExceed, ExceedQuota                     Retry (backoff)
    RequestTimeExpired, InvalidRequestTime      learn the server's clock from its Date/x-log-time, Retry
    Unauthorized, SignatureNotMatch, InvalidAccessKeyId, SecurityToken(.)Expired, ProjectForbidden,
    ProjectNotExist, LogStoreNotExist, other 4xx                             Blocked (names project, logstore,
                                                key id and where the credentials come from; never the secret)
    PostBodyTooLarge, HTTP 413                  Split (halves; a single event is re-sent trimmed to Metadata)
    PostBodyInvalid, InvalidKey, InvalidEncoding, InvalidTimestamp           bisect; one event left: Rejected
Every error's errorCode, errorMessage and x-log-requestid go into the reason (logged by the engine) and the
per-code counters (`metric_families`). What the sink learns from an answer it learns in `send`, which sees it
first: the error counters, the server's clock, stale credentials, and (in `request.meta`) whether the request
was too large, which `split` needs; `classify` only reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import lz4.block
import zstandard

from kube_audit_shipper.delivery.answers import retry_after
from kube_audit_shipper.delivery.context import SinkContext
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Rejected, Reply, Request, Retry, Sink, Split
from kube_audit_shipper.sinks.http.client import tls_failure
from kube_audit_shipper.sinks.sls import pb
from kube_audit_shipper.sinks.sls.auth import CredentialsError, CredentialSource
from kube_audit_shipper.sinks.sls.client import SlsClient, SlsError, parse_error, server_time
from kube_audit_shipper.sinks.sls.config import SlsSinkConfig
from kube_audit_shipper.sinks.sls.shape import NotAnEvent, Shaped, fit, shape

log = logging.getLogger(__name__)

RETRY_CODES = frozenset(
    {"ServerBusy", "InternalServerError", "RequestTimeout", "WriteQuotaExceed", "ShardWriteQuotaExceed", "ExceedQuota", "ServiceUnavailable"}
)
CLOCK_CODES = frozenset({"RequestTimeExpired", "InvalidRequestTime"})
AUTH_CODES = frozenset(
    {"Unauthorized", "SignatureNotMatch", "InvalidAccessKeyId", "SecurityToken.Expired", "SecurityTokenExpired", "InvalidSecurityToken", "ProjectForbidden"}
)
MISSING_CODES = frozenset({"ProjectNotExist", "LogStoreNotExist"})
TOO_LARGE_CODES = frozenset({"PostBodyTooLarge"})
RECORD_CODES = frozenset({"PostBodyInvalid", "InvalidKey", "InvalidEncoding", "InvalidTimestamp", "InvalidLogSize"})
#: a single event the server still finds too large is re-sent with every value cut to this
MINIMAL_VALUE_BYTES = 64 << 10
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")


def node_ip(endpoint_host: str | None = None) -> str:
    """The node's IP for LogGroup.Source: $NODE_IP / $HOST_IP / $POD_IP (downward API), else the address the
    host name resolves to, else 127.0.0.1."""
    for name in ("NODE_IP", "HOST_IP", "POD_IP"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    try:
        addr = socket.gethostbyname(socket.gethostname())
        if addr and not addr.startswith("127."):
            return addr
    except OSError:
        pass
    return "127.0.0.1"


def hash_key(value: str) -> str:
    """The `key` of /shards/route: 32 hex digits are used as given, anything else is MD5'd (upper hex)."""
    if _HEX32.match(value):
        return value.upper()
    return hashlib.md5(value.encode()).hexdigest().upper()


class SlsSink(Sink):
    max_concurrency: int | None = None  # SLS takes groups in any order

    def __init__(self, cfg: SlsSinkConfig, ctx: SinkContext, *, environ: dict[str, str] | None = None) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.credentials = CredentialSource(
            access_key_id=cfg.access_key_id,
            access_key_secret=cfg.access_key_secret,
            security_token=cfg.security_token,
            credentials_file=cfg.credentials_file,
            env_names=(cfg.access_key_id_env, cfg.access_key_secret_env, cfg.security_token_env),
            environ=environ,
        )
        self.client = SlsClient(cfg, self.credentials, ctx.http(cfg, max_connections=max(2, cfg.concurrency)))
        self.node = ctx.node or socket.gethostname()
        self.source = cfg.source if cfg.source is not None else node_ip()
        path = cfg.path_tag if cfg.path_tag is not None else (ctx.input_paths[0] if ctx.input_paths else "")
        self._static_tags = [("__hostname__", self.node)] + ([("__path__", path)] if path else [])
        self._user_tags = sorted(cfg.tags.items())
        self._pack_prefix = "{:016X}".format(int.from_bytes(hashlib.md5(f"{self.node}|{path}|{cfg.name}|{uuid.uuid4()}".encode()).digest()[:8], "big"))
        self._pack_seq = itertools.count(1)
        self.resource = f"/logstores/{cfg.logstore}/shards/" + ("route" if cfg.shard_hash_key else "lb")
        self.params = {"key": hash_key(cfg.shard_hash_key)} if cfg.shard_hash_key else {}
        self.compression = cfg.compression
        self._zstd = threading.local()
        # counters for metrics and tests
        self._lock = threading.Lock()
        self.error_codes: Counter[str] = Counter()
        self.requests_sent = 0
        self.trimmed_events = 0
        self.untimed_events = 0
        self.last_request_id = ""
        self.last_error: SlsError | None = None
        self.clock_adjustments = 0

    # -- encoding ----------------------------------------------------------------------------------
    def encode(self, records: list[bytes]) -> list[Request]:
        return self._encode(records, range(len(records)))

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        idx = list(request.indices)
        if len(idx) >= 2:
            mid = len(idx) // 2
            minimal = bool(request.meta.get("minimal"))
            return self._encode(records, idx[:mid], minimal=minimal) + self._encode(records, idx[mid:], minimal=minimal)
        if request.meta.get("minimal") or not _too_large(request):
            return []  # the engine dead-letters it, with the reason
        return self._encode(records, idx, minimal=True)

    def _tags(self) -> list[tuple[str, str]]:
        return [*self._static_tags, ("__pack_id__", f"{self._pack_prefix}-{next(self._pack_seq):X}"), *self._user_tags]

    def _encode(self, records: list[bytes], indices: Sequence[int], *, minimal: bool = False) -> list[Request]:
        cfg = self.cfg
        with_ns = cfg.time_ns
        # the largest header a group can have (the pack id grows with its sequence number): an upper bound
        middle, tag_bytes = pb.group_header(
            cfg.topic, self.source, [*self._static_tags, ("__pack_id__", self._pack_prefix + "-FFFFFFFFFFFF"), *self._user_tags]
        )
        header_size = len(middle) + len(tag_bytes)
        max_group = cfg.max_request_bytes - header_size
        max_log = max_group - 16  # one log alone must fit, with its field header
        max_value = MINIMAL_VALUE_BYTES if minimal else cfg.max_value_bytes
        requests: list[Request] = []
        logs: list[bytes] = []
        group_idx: list[int] = []
        size = 0
        trimmed = untimed = 0
        for i in indices:
            try:
                shaped = shape(records[i])
            except NotAnEvent as exc:  # not from the pipeline (it only passes JSON objects): keep it as text
                now = time.time()
                shaped = Shaped([(b"content", records[i]), (b"shipper_error", f"not a JSON object: {exc}".encode())], int(now), int(now % 1 * 1e9), False)
            if not shaped.timed:
                untimed += 1
            fitted = fit(shaped, max_value=max_value, max_log=max_log, with_ns=with_ns, force_metadata=minimal)
            if fitted is not shaped:
                trimmed += 1
                log.warning("event too large for SLS: trimmed and annotated", extra={"sink": self.name, "event_index": i, "note": fitted.note})
            encoded = pb.encode_log(fitted.time_s, fitted.time_ns if with_ns else None, fitted.contents)
            add = pb.log_field_size(encoded)
            if logs and (len(logs) >= cfg.max_request_logs or size + add > max_group):
                requests.append(self._request(logs, group_idx, minimal))
                logs, group_idx, size = [], [], 0
            logs.append(encoded)
            group_idx.append(i)
            size += add
        if logs:
            requests.append(self._request(logs, group_idx, minimal))
        if trimmed or untimed:
            with self._lock:
                self.trimmed_events += trimmed
                self.untimed_events += untimed
        return requests

    def _request(self, logs: list[bytes], indices: list[int], minimal: bool) -> Request:
        middle, tag_bytes = pb.group_header(self.cfg.topic, self.source, self._tags())
        raw = pb.encode_group(logs, middle, tag_bytes)
        body = self._compress(raw)
        headers = self.client.base_headers(content_type="application/x-protobuf", body=body, raw_size=len(raw))
        if self.compression != "none":
            headers["x-log-compresstype"] = self.compression
        meta: dict[str, Any] = {"logs": len(logs)}
        if minimal:
            meta["minimal"] = True
        if self.cfg.signature_version == "v4":
            meta["sha256"] = hashlib.sha256(body).hexdigest()
        return Request(payload=body, indices=indices, headers=headers, raw_bytes=len(raw), meta=meta)

    def _compress(self, raw: bytes) -> bytes:
        if self.compression == "lz4":
            block: bytes = lz4.block.compress(raw, store_size=False)
            return block
        if self.compression == "zstd":
            cctx = getattr(self._zstd, "cctx", None)
            if cctx is None:
                cctx = self._zstd.cctx = zstandard.ZstdCompressor(level=1)
            return cctx.compress(raw)
        return raw

    # -- sending ----------------------------------------------------------------------------------
    async def send(self, request: Request) -> Reply:
        with self._lock:
            self.requests_sent += 1
        try:
            reply = await self.client.request(
                "POST", self.resource, params=self.params, body=request.payload, headers=request.headers, payload_sha256=request.meta.get("sha256")
            )
        except Exception as exc:
            self._count(_failure_code(exc))
            raise
        self._learn(request, reply)
        return reply

    def _learn(self, request: Request, reply: Reply) -> None:
        """What an answer teaches the sink: counters, the server's clock, stale credentials, the code `split` needs."""
        if reply.status == 200:
            self.last_request_id = reply.headers.get("x-log-requestid", "")
            return
        err = parse_error(reply)
        self._count(err.code)
        self.last_error = err
        if err.request_id:
            self.last_request_id = err.request_id
        request.meta["too_large"] = err.code in TOO_LARGE_CODES or reply.status == 413
        if err.code in CLOCK_CODES:
            before = self.client.clock_offset_s
            offset = self.client.learn_clock(reply.headers)
            if offset is not None:
                self.clock_adjustments += 1
                log.warning(
                    "SLS says our clock is off: signing with the server's time from now on",
                    extra={"sink": self.name, "clock_offset_s": round(offset, 3), "previous_offset_s": round(before, 3), "request_id": err.request_id},
                )
        elif err.code in AUTH_CODES:
            self.credentials.invalidate()  # maybe rotated: read the file again before the next attempt
            request.meta["key_id"] = self._key_id()

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        if isinstance(result, Reply):
            if result.status == 200:
                return Delivered()
            return self._classify_error(request, parse_error(result), result)
        return self._classify_exception(result)

    def _where(self) -> str:
        return f"project {self.cfg.project}, logstore {self.cfg.logstore} at {self.cfg.endpoint}"

    def _key_id(self) -> str:
        try:
            return self.credentials.get().access_key_id
        except CredentialsError:
            return "(none)"

    def _classify_exception(self, exc: BaseException) -> Outcome:
        if isinstance(exc, CredentialsError):
            return Blocked(f"SLS {self._where()}: {exc}")
        tls = tls_failure(exc)
        if tls is not None:
            return Blocked(f"SLS {self._where()}: TLS error: {tls} (set tls.ca_file, or tls.insecure_skip_verify for a test endpoint)")
        if isinstance(exc, (httpx.TransportError, asyncio.TimeoutError, TimeoutError, OSError)):
            return Retry(f"SLS {self._where()}: network error: {type(exc).__name__}: {exc}")
        return Retry(f"SLS {self._where()}: {type(exc).__name__}: {exc}")

    def _count(self, code: str) -> None:
        with self._lock:
            self.error_codes[code] += 1

    def _classify_error(self, request: Request, err: SlsError, reply: Reply) -> Outcome:
        code, status = err.code, err.status
        what = f"SLS {self._where()}: {err}"
        if code in CLOCK_CODES:
            if server_time(reply.headers) is not None:
                return Retry(f"{what} (clock offset now {self.client.clock_offset_s:+.0f} s)", after_s=0.0)
            return Retry(f"{what} (the answer carried no Date to correct the clock with)")
        if code in RETRY_CODES or status >= 500 or status == 429:
            return Retry(what, after_s=retry_after(reply.headers))
        if code in AUTH_CODES:
            return Blocked(f"{what}; access key id {request.meta.get('key_id', '(unknown)')} from {self.credentials.describe()}")
        if code in MISSING_CODES:
            return Blocked(f"{what}; create it (kube-audit-shipper sls ensure -c CONFIG creates the logstore and its index)")
        if code in TOO_LARGE_CODES or status == 413:
            return Split(what)
        if code in RECORD_CODES:
            if len(request.indices) > 1:
                return Split(f"{what}; bisecting to find the event")
            return Rejected(what, list(request.indices))
        return Blocked(what)  # anything else: keep the data, tell the operator

    # -- metrics -----------------------------------------------------------------------------------
    def metric_families(self) -> Iterator[Any]:
        """Prometheus families for the agent's collector: SLS errors by code, trims, clock offset, reloads."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        p = "kube_audit_shipper_sls_"
        errors = CounterMetricFamily(p + "errors", "SLS error answers and transport failures, by errorCode", labels=["sink", "code"])
        with self._lock:
            for code, n in sorted(self.error_codes.items()):
                errors.add_metric([self.name, code], n)
            requests, trimmed, untimed = self.requests_sent, self.trimmed_events, self.untimed_events
        yield errors
        yield _one(CounterMetricFamily, p + "requests", "PutLogs requests sent", self.name, requests)
        yield _one(CounterMetricFamily, p + "events_trimmed", "Events trimmed to Metadata level (or cut) to fit SLS limits, annotated", self.name, trimmed)
        yield _one(CounterMetricFamily, p + "events_untimed", "Events with no timestamp: __time__ is the time they were sent", self.name, untimed)
        yield _one(
            CounterMetricFamily, p + "credential_reloads", "Times credentials_file was re-read with new credentials", self.name, self.credentials.reloads
        )
        yield _one(
            GaugeMetricFamily,
            p + "clock_offset_seconds",
            "Server clock minus ours, learned from RequestTimeExpired (used to sign)",
            self.name,
            self.client.clock_offset_s,
        )

    async def aclose(self, deadline: float | None = None) -> None:
        await self.client.aclose()


def _too_large(request: Request) -> bool:
    """Whether the backend's last answer said the request itself is too large (not that one of its events is invalid)."""
    return bool(request.meta.get("too_large"))


def _failure_code(exc: BaseException) -> str:
    """The error counter a failed attempt counts under."""
    if isinstance(exc, CredentialsError):
        return "NoCredentials"
    if tls_failure(exc) is not None:
        return "TLSError"
    if isinstance(exc, (httpx.TransportError, asyncio.TimeoutError, TimeoutError, OSError)):
        return "NetworkError"
    return "ClientError"


def _one(kind: Any, name: str, doc: str, sink: str, value: float) -> Any:
    fam = kind(name, doc, labels=["sink"])
    fam.add_metric([sink], value)
    return fam

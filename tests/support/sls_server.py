"""A local Alibaba Cloud SLS server for the tests, strict where the real one is, and scriptable.

It checks what the real service checks, using the official Python SDK's own code (`aliyun-log-python-sdk`, a
test dependency) wherever the SDK has it:

* signatures v1 (`aliyun.log.auth.AuthV1.sign_request`, with the request's own Date) and v4
  (`AuthV4._do_sign_request`, with the request's x-log-date and the server's region); the access key id must be
  known, the STS token (x-acs-security-token) must match the one issued with it;
* the request time: more than 15 minutes off the server's clock (which can be skewed, `clock_offset_s`) is
  `400 RequestTimeExpired`; every answer carries the server's `Date`;
* Content-MD5 (upper hex of the body; v4 requests may omit it: they sign x-log-content-sha256) and `x-log-bodyrawsize` against the decompressed body; lz4 raw block
  (`lz4.block.decompress(uncompressed_size=...)`, as the SDK's compress.py) or zstd;
* the body decodes with the SDK's protobuf class `aliyun.log.log_logs_pb2.LogGroup` (string values: UTF-8 checked);
* limits: raw body over `max_raw_bytes` (5 MiB) or more than `max_logs` (4096) logs: `PostBodyTooLarge`; a value
  over `max_value_bytes` (1 MiB, the documented per-value limit): `PostBodyInvalid` naming the key;
* project (x-log-project header, else the first label of Host) and logstore must exist.

`inject(code, times=n)` makes the next n PutLogs answer with any error code (status as the real service gives
it); `poison(contents)` can refuse a group for one of its logs (to test bisecting); `logs(logstore)` returns what was stored, one dict per log with `__time__`, `__time_ns__`, the group's
`__topic__`, `__source__` and `__tag__:*`, and every content. The logstore/index API used by `sls ensure`
(GET/POST /logstores, GET/POST/PUT /logstores/<name>/index) is there too; index bodies are read with the SDK's
`IndexConfig.from_json`.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import lz4.block
import zstandard
from aliyun.log.auth import AuthV1, AuthV4
from aliyun.log.credentials import StaticCredentialsProvider
from aliyun.log.index_config import IndexConfig
from aliyun.log.log_logs_pb2 import LogGroup  # type: ignore[attr-defined]  # generated at import time

STATUS = {
    "ServerBusy": 503,
    "InternalServerError": 500,
    "WriteQuotaExceed": 403,
    "ShardWriteQuotaExceed": 403,
    "ProjectForbidden": 403,
    "RequestTimeExpired": 400,
    "InvalidRequestTime": 400,
    "Unauthorized": 401,
    "SignatureNotMatch": 401,
    "InvalidAccessKeyId": 401,
    "ProjectNotExist": 404,
    "LogStoreNotExist": 404,
    "IndexConfigNotExist": 404,
    "PostBodyTooLarge": 400,
    "PostBodyInvalid": 400,
    "PostBodyUncompressError": 400,
    "InvalidCompressType": 400,
    "ParameterInvalid": 400,
    "LogStoreAlreadyExist": 400,
    "IndexAlreadyExist": 400,
    "InvalidContentType": 400,
}
MAX_SKEW_S = 15 * 60


class SlsReject(Exception):
    def __init__(self, code: str, message: str, status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS.get(code, 400)
        self.headers = headers or {}


@dataclass
class Logstore:
    name: str
    ttl: int = 30
    shard_count: int = 2
    index: dict[str, Any] | None = None
    groups: list[dict[str, Any]] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """A GetLogStore answer (the fields the SDK's GetLogStoreResponse reads, with the service's defaults)."""
        out = {"enable_tracking": False, "autoSplit": True, "maxSplitShard": 64, "appendMeta": False, "telemetryType": "", "mode": "standard"}
        out.update(self.spec)
        out.update(logstoreName=self.name, ttl=self.ttl, shardCount=self.shard_count)
        return out


@dataclass
class Seen:
    """One request as received, with the answer given."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    code: str = ""
    raw: bytes = b""


class SlsTestServer:
    def __init__(
        self,
        *,
        keys: dict[str, tuple[str, str]] | None = None,
        projects: dict[str, list[str]] | None = None,
        region: str = "cn-hangzhou",
        clock_offset_s: float = 0.0,
        max_raw_bytes: int = 5 << 20,
        max_logs: int = 4096,
        max_value_bytes: int = 1 << 20,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.keys = dict(keys if keys is not None else {"AKID": ("SECRET", "")})  # id -> (secret, sts token or "")
        self.projects: dict[str, dict[str, Logstore]] = {
            p: {ls: Logstore(ls) for ls in stores} for p, stores in (projects or {"k8s-log-c0123": ["audit-c0123"]}).items()
        }
        self.region = region
        self.clock_offset_s = clock_offset_s
        self.max_raw_bytes = max_raw_bytes
        self.max_logs = max_logs
        self.max_value_bytes = max_value_bytes
        self.tls = tls  # serve HTTPS with this server context
        self.seen: list[Seen] = []
        #: poison(contents) -> an error code to refuse the whole group with (as SLS refuses a group with one bad log)
        self.poison: Callable[[dict[str, str]], str | None] | None = None
        self._script: deque[tuple[str, str, int, dict[str, str]]] = deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control -----------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def now(self) -> float:
        return time.time() + self.clock_offset_s

    def start(self) -> SlsTestServer:
        server = self

        class Handler(_Handler):
            sls = server

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> SlsTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, code: str, times: int = 1, *, message: str = "", status: int | None = None, headers: dict[str, str] | None = None) -> None:
        """The next `times` PutLogs requests (that pass authentication) answer with this error (and `headers`)."""
        with self._lock:
            for _ in range(times):
                self._script.append((code, message or f"injected {code}", status or STATUS.get(code, 400), dict(headers or {})))

    def pending_injections(self) -> int:
        with self._lock:
            return len(self._script)

    def rotate_key(self, old: str, new: str, secret: str, token: str = "") -> None:
        """Issue new credentials and revoke the old ones (as an STS rotation does)."""
        with self._lock:
            self.keys.pop(old, None)
            self.keys[new] = (secret, token)

    # -- what was stored ---------------------------------------------------------------------------
    def groups(self, logstore: str, project: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            out = []
            for p, stores in self.projects.items():
                if project in (None, p) and logstore in stores:
                    out.extend(stores[logstore].groups)
            return list(out)

    def logs(self, logstore: str, project: str | None = None) -> list[dict[str, Any]]:
        """Every stored log, flattened as SLS shows it: contents plus __time__, __topic__, __source__, __tag__:*."""
        rows = []
        for g in self.groups(logstore, project):
            for entry in g["logs"]:
                row = {"__time__": entry["time"], "__time_ns__": entry["time_ns"], "__topic__": g["topic"], "__source__": g["source"]}
                row.update({f"__tag__:{k}": v for k, v in g["tags"].items()})
                row.update(entry["contents"])
                rows.append(row)
        return rows

    def putlogs(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and "/shards/" in s.path]

    # -- request handling (called from the handler threads) -----------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(target)
        path = parts.path
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        seen = Seen(method, path, params, headers, body)
        with self._lock:
            self.seen.append(seen)
        rid = uuid.uuid4().hex[:24].upper()
        try:
            status, payload = self._route(method, path, params, headers, body, seen)
        except SlsReject as exc:
            seen.status, seen.code = exc.status, exc.code
            return (
                exc.status,
                {"x-log-requestid": rid, "Content-Type": "application/json", **exc.headers},
                json.dumps({"errorCode": exc.code, "errorMessage": exc.message}).encode(),
            )
        seen.status = status
        return status, {"x-log-requestid": rid, "Content-Type": "application/json"}, payload

    def _route(self, method: str, path: str, params: dict[str, str], headers: dict[str, str], body: bytes, seen: Seen) -> tuple[int, bytes]:
        lower = {k.lower(): v for k, v in headers.items()}
        project = lower.get("x-log-project") or lower.get("host", "").split(".", 1)[0]
        version = self._authenticate(method, path, params, headers, body)
        if project not in self.projects:
            raise SlsReject("ProjectNotExist", f"The Project does not exist : {project}")
        stores = self.projects[project]
        segs = path.strip("/").split("/")
        if segs[0] != "logstores":
            raise SlsReject("ParameterInvalid", f"unsupported resource {path}")
        if len(segs) == 1 and method == "POST":
            return self._create_logstore(stores, body)
        name = segs[1] if len(segs) > 1 else ""
        store = stores.get(name)
        if store is None:
            raise SlsReject("LogStoreNotExist", f"logstore {name} does not exist")
        if len(segs) == 2 and method == "GET":
            return 200, json.dumps(store.describe()).encode()
        if len(segs) == 3 and segs[2] == "index":
            return self._index(store, method, body)
        if len(segs) == 4 and segs[2] == "shards" and segs[3] in ("lb", "route") and method == "POST":
            if segs[3] == "route" and not params.get("key"):
                raise SlsReject("ParameterInvalid", "shards/route needs key")
            with self._lock:
                injected = self._script.popleft() if self._script else None
            if injected is not None:
                code, message, status, extra = injected
                raise SlsReject(code, message, status, extra)
            group = self._putlogs(lower, body, seen, md5_required=version == "v1")
            with self._lock:
                store.groups.append(group)
            return 200, b""
        raise SlsReject("ParameterInvalid", f"unsupported {method} {path}")

    def _authenticate(self, method: str, path: str, params: dict[str, str], headers: dict[str, str], body: bytes) -> str:
        lower = {k.lower(): v for k, v in headers.items()}
        auth = lower.get("authorization", "")
        now = self.now()
        if auth.startswith("LOG "):
            key_id = auth[4:].partition(":")[0]
            secret, token = self._key(key_id, lower)
            date = lower.get("x-log-date") or lower.get("date", "")
            try:
                when = parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError, IndexError) as exc:
                raise SlsReject("InvalidRequestTime", f"bad Date {date!r}") from exc
            if abs(when - now) > MAX_SKEW_S:
                raise SlsReject("RequestTimeExpired", f"Request time {date} has been expired while server time is {formatdate(now, usegmt=True)}.")
            sign = {k: v for k, v in lower.items() if (k.startswith(("x-log-", "x-acs-"))) and k != "x-log-date"}
            if "content-type" in lower:
                sign["Content-Type"] = lower["content-type"]

            class _At(AuthV1):
                @staticmethod
                def _getGMT() -> str:
                    return lower.get("date", "")

            _At(StaticCredentialsProvider(key_id, secret, token)).sign_request(method, path, dict(params), sign, body)
            expected = sign["Authorization"]
            version = "v1"
        elif auth.startswith("SLS4-HMAC-SHA256 "):
            fields = dict(part.strip().split("=", 1) for part in auth[len("SLS4-HMAC-SHA256 ") :].split(","))
            key_id = fields.get("Credential", "").split("/", 1)[0]
            secret, token = self._key(key_id, lower)
            stamp = lower.get("x-log-date", "")
            try:
                when = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
            except ValueError as exc:
                raise SlsReject("InvalidRequestTime", f"bad x-log-date {stamp!r}") from exc
            if abs(when - now) > MAX_SKEW_S:
                raise SlsReject("RequestTimeExpired", f"Request time {stamp} has been expired while server time is {formatdate(now, usegmt=True)}.")
            sign = dict(lower)
            sign.pop("authorization", None)
            expected = AuthV4(StaticCredentialsProvider(key_id, secret, token), self.region)._do_sign_request(method, path, dict(params), sign, body, stamp)
            version = "v4"
        else:
            raise SlsReject("Unauthorized", "no or unknown Authorization header")
        if auth != expected:
            raise SlsReject("SignatureNotMatch", f"signature {auth.rsplit(':', 1)[-1]} not match")
        return version

    def _key(self, key_id: str, lower: dict[str, str]) -> tuple[str, str]:
        with self._lock:
            entry = self.keys.get(key_id)
        if entry is None:
            raise SlsReject("InvalidAccessKeyId", f"AccessKeyId {key_id} is not found")
        secret, token = entry
        if token and lower.get("x-acs-security-token") != token:
            raise SlsReject("Unauthorized", "The security token you provided is invalid or expired.")
        if not token and lower.get("x-acs-security-token"):
            raise SlsReject("Unauthorized", "a security token was sent with a permanent AccessKey")
        return secret, token

    def _putlogs(self, lower: dict[str, str], body: bytes, seen: Seen, *, md5_required: bool) -> dict[str, Any]:
        if lower.get("content-type") != "application/x-protobuf":
            raise SlsReject("InvalidContentType", f"Content-Type {lower.get('content-type')!r}")
        md5 = hashlib.md5(body).hexdigest().upper()
        if (md5_required or "content-md5" in lower) and lower.get("content-md5") != md5:  # v4 signs x-log-content-sha256 instead
            raise SlsReject("ParameterInvalid", f"Content-MD5 {lower.get('content-md5')!r} does not match the body ({md5})")
        if lower.get("x-log-apiversion") != "0.6.0":
            raise SlsReject("ParameterInvalid", "x-log-apiversion must be 0.6.0")
        try:
            raw_size = int(lower["x-log-bodyrawsize"])
        except (KeyError, ValueError) as exc:
            raise SlsReject("ParameterInvalid", "x-log-bodyrawsize missing or not a number") from exc
        if raw_size > self.max_raw_bytes:
            raise SlsReject("PostBodyTooLarge", f"body raw size {raw_size} exceeds {self.max_raw_bytes}")
        compress = lower.get("x-log-compresstype", "")
        try:
            if compress == "lz4":
                raw = lz4.block.decompress(body, uncompressed_size=raw_size)
            elif compress == "zstd":
                raw = zstandard.ZstdDecompressor().decompress(body, max_output_size=self.max_raw_bytes + 1)
            elif compress == "":
                raw = body
            else:
                raise SlsReject("InvalidCompressType", f"compress type {compress!r}")
        except (lz4.block.LZ4BlockError, zstandard.ZstdError) as exc:
            raise SlsReject("PostBodyUncompressError", f"{compress}: {exc}") from exc
        if len(raw) != raw_size:
            raise SlsReject("ParameterInvalid", f"x-log-bodyrawsize {raw_size} but the body is {len(raw)} bytes")
        seen.raw = raw
        group = LogGroup()
        try:
            group.ParseFromString(raw)
        except Exception as exc:
            raise SlsReject("PostBodyInvalid", f"not a LogGroup: {exc}") from exc
        if not group.IsInitialized():
            raise SlsReject("PostBodyInvalid", f"required fields missing: {group.FindInitializationErrors()}")
        if len(group.Logs) > self.max_logs:
            raise SlsReject("PostBodyTooLarge", f"{len(group.Logs)} logs in one group (max {self.max_logs})")
        logs: list[dict[str, Any]] = []
        for entry in group.Logs:
            contents: dict[str, str] = {}
            for c in entry.Contents:
                if len(c.Value.encode()) > self.max_value_bytes:
                    raise SlsReject("PostBodyInvalid", f"value of key {c.Key} is {len(c.Value.encode())} bytes (max {self.max_value_bytes})")
                contents.setdefault(c.Key, c.Value)
            if self.poison is not None and (bad := self.poison(contents)):
                raise SlsReject(bad, f"log {len(logs)} of the group is invalid ({bad})")
            logs.append({"time": entry.Time, "time_ns": entry.Time_ns if entry.HasField("Time_ns") else None, "contents": contents})
        return {
            "topic": group.Topic,
            "source": group.Source,
            "tags": {t.Key: t.Value for t in group.LogTags},
            "logs": logs,
            "compress": compress,
            "raw_size": raw_size,
            "route_key": seen.params.get("key"),
        }

    def _create_logstore(self, stores: dict[str, Logstore], body: bytes) -> tuple[int, bytes]:
        try:
            spec = json.loads(body)
            name, ttl = spec["logstoreName"], int(spec["ttl"])
            shards = int(spec.get("shardCount", 2))
        except (ValueError, KeyError, TypeError) as exc:
            raise SlsReject("ParameterInvalid", f"bad logstore body: {exc}") from exc
        if not 1 <= ttl <= 3650:
            raise SlsReject("ParameterInvalid", f"ttl {ttl} out of range")
        with self._lock:
            if name in stores:
                raise SlsReject("LogStoreAlreadyExist", f"logstore {name} already exists")
            stores[name] = Logstore(name, ttl, shards, spec=spec)
        return 200, b""

    def _index(self, store: Logstore, method: str, body: bytes) -> tuple[int, bytes]:
        if method == "GET":
            if store.index is None:
                raise SlsReject("IndexConfigNotExist", f"index config of logstore {store.name} does not exist")
            return 200, json.dumps(store.index).encode()
        try:
            spec = json.loads(body)
            IndexConfig().from_json(spec)  # the SDK's own reader of index configs
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SlsReject("ParameterInvalid", f"bad index body: {exc!r}") from exc
        with self._lock:
            if method == "POST" and store.index is not None:
                raise SlsReject("IndexAlreadyExist", f"index of logstore {store.name} already exists")
            if method == "PUT" and store.index is None:
                raise SlsReject("IndexConfigNotExist", f"index config of logstore {store.name} does not exist")
            store.index = spec
        return 200, b""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client that gave up, a failed TLS handshake
        pass


class _Handler(BaseHTTPRequestHandler):
    sls: SlsTestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        return formatdate(self.sls.now() if timestamp is None else timestamp, usegmt=True)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, payload = self.sls.handle(self.command, self.path, dict(self.headers.items()), body)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


@contextmanager
def running(**kwargs: Any) -> Iterator[SlsTestServer]:
    server = SlsTestServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()

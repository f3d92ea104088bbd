"""`type: loki`: push audit events to Grafana Loki (`POST {url}/loki/api/v1/push`).

Encoding (encode.py): one stream per label set (fixed labels, the node, `label_fields` values), the line is
the event as compact JSON, the timestamp its `stageTimestamp` in nanoseconds, structured metadata from
`structured_metadata` fields; snappy-compressed protobuf (default) or JSON (gzip by default); requests of at
most `max_request_bytes` uncompressed, whatever the batch size.

Order: a stream's entries go out in timestamp order within a request and from one request to the next
(encode.py), and `max_concurrency = 1` keeps them in that order across batches and retries: a request is
sent again, or split, before anything after it is sent. Loki 3 would take entries up to an hour out of order,
but not older than that (`entry too far behind`), and queries of equal timestamps show them in arrival order.

Answers (replies.py): Delivered, Retry (429, 5xx, transport), Split (request too large), Rejected (400 per
entry: Loki stored the rest of the request), Blocked (401/403/404, TLS, credentials, a body Loki cannot read).

`send` is one POST with httpx: a client made at the first send (its TLS context loaded off the event loop),
per-phase timeouts plus an overall bound of `timeout_s`; a `bearer_token_file` is read again whenever it
changes on disk (projected service account tokens are rotated).
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from typing import Any

import httpx

from kube_audit_shipper import __version__
from kube_audit_shipper.delivery.contract import Outcome, Reply, Request
from kube_audit_shipper.sinks.loki import replies
from kube_audit_shipper.sinks.loki.config import LokiSinkConfig
from kube_audit_shipper.sinks.loki.encode import PushEncoder
from kube_audit_shipper.sinks.loki.replies import CredentialsError, TlsSetupError

PUSH_PATH = "/loki/api/v1/push"


class LokiSink:
    max_concurrency: int | None = 1  # a stream's entries must reach Loki in order (see the module docstring)

    def __init__(self, cfg: LokiSinkConfig, *, node: str, state_dir: str = "") -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._encoder = PushEncoder(cfg, node=node)
        base = cfg.url.rstrip("/")
        self.push_url = base if base.endswith(PUSH_PATH) else base + PUSH_PATH
        headers = {"User-Agent": f"kube-audit-shipper/{__version__}", **cfg.headers}
        if cfg.tenant_id:
            headers["X-Scope-OrgID"] = cfg.tenant_id
        if cfg.basic_auth is not None:
            pair = f"{cfg.basic_auth.username}:{cfg.basic_auth.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif cfg.bearer_token is not None:
            headers["Authorization"] = f"Bearer {cfg.bearer_token.strip()}"
        self._headers = headers
        self._token = _TokenFile(cfg.bearer_token_file) if cfg.bearer_token_file else None
        self._client: httpx.AsyncClient | None = None

    @property
    def trimmed_events(self) -> int:
        """Events cut to Metadata level because they were over max_line_bytes."""
        return self._encoder.trimmed_events

    # -- contract ------------------------------------------------------------------------------------
    def encode(self, records: list[bytes]) -> list[Request]:
        return self._encoder.encode(records)

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        return self._encoder.split(request, records)

    async def send(self, request: Request) -> Reply:
        client = self._client if self._client is not None else await self._open()
        headers = {**self._headers, **request.headers}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.read()}"
        response = await asyncio.wait_for(client.post(self.push_url, content=request.payload, headers=headers), self.cfg.timeout_s)
        return Reply(response.status_code, response.headers, response.content)

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        return replies.classify(request, result)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- the HTTP client -----------------------------------------------------------------------------
    async def _open(self) -> httpx.AsyncClient:
        verify: Any = True
        if self.cfg.tls is not None:
            verify = await asyncio.to_thread(self._ssl_context)
        if self._client is None:
            timeout = httpx.Timeout(self.cfg.timeout_s, connect=min(10.0, self.cfg.timeout_s))
            self._client = httpx.AsyncClient(
                timeout=timeout,
                verify=verify,
                trust_env=False,
                proxy=self.cfg.proxy_url,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=2, max_keepalive_connections=1),
            )
        return self._client

    def _ssl_context(self) -> ssl.SSLContext:
        tls = self.cfg.tls
        assert tls is not None
        try:
            ctx = ssl.create_default_context(cafile=tls.ca_file)
            if tls.insecure_skip_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if tls.cert_file is not None:
                ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(f"cannot load the TLS files (ca_file, cert_file, key_file): {exc.strerror or exc}") from exc
        return ctx


class _TokenFile:
    """A bearer token file, read again when its inode, size or mtime changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sig: tuple[int, int, int] | None = None
        self._token = ""

    def read(self) -> str:
        try:
            st = os.stat(self.path)
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
            if sig != self._sig:
                with open(self.path, encoding="utf-8") as fh:
                    token = fh.read().strip()
                if not token:
                    raise CredentialsError(f"bearer_token_file {self.path} is empty")
                self._token, self._sig = token, sig
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialsError(f"cannot read bearer_token_file {self.path}: {getattr(exc, 'strerror', None) or exc}") from exc
        return self._token

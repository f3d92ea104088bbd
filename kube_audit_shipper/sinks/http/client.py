"""The HTTP client every HTTP sink and alert target makes through its SinkContext, and what a transport error means.

`HttpClients` is the factory the agent puts in every SinkContext (delivery/context.py): it reads the keys every
HTTP sink shares (`timeout_s`, `tls`, `proxy_url`: delivery/config.py HttpSinkConfigBase) and, for a sink
that has them (sinks/http/config.py HttpAuthConfigBase), basic auth, a bearer token or token file, and extra
headers. `HttpClient.request` is one attempt (the engine retries): an httpx client made at the first request
in the running event loop (its TLS context loaded off the loop), per-phase timeouts plus an overall bound of
`timeout_s`, no environment proxies, no redirects (a redirect is an answer to classify, not something to
follow with credentials attached). A `bearer_token_file` is read again whenever it changes on disk
(projected service account tokens rotate).

Reasons never carry a URL: a Slack webhook URL and a DingTalk query hold the credentials.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from kube_audit_shipper import __version__
from kube_audit_shipper.delivery.answers import caused_by
from kube_audit_shipper.delivery.config import HttpSinkConfigBase, TlsConfig
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Reply, Retry
from kube_audit_shipper.sinks.http.config import HttpAuthConfigBase

MAX_REASON = 600
USER_AGENT = f"kube-audit-shipper/{__version__}"
CONNECT_TIMEOUT_MAX_S = 10.0


class CredentialsError(Exception):
    """The bearer token file cannot be read (send raises it; classify: Blocked)."""


class TlsSetupError(Exception):
    """The CA file or client certificate cannot be loaded (send raises it; classify: Blocked)."""


class HttpClients:
    """The HTTP client factory of a SinkContext (delivery/context.py HttpClientFactory)."""

    def __call__(self, cfg: HttpSinkConfigBase, *, max_connections: int = 2) -> HttpClient:
        return HttpClient(cfg, max_connections=max_connections)


class HttpClient:
    def __init__(self, cfg: HttpSinkConfigBase, *, max_connections: int = 2) -> None:
        self.timeout_s = cfg.timeout_s
        self._tls: TlsConfig | None = cfg.tls
        self._proxy = cfg.proxy_url
        self._max_connections = max_connections
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._headers = {"User-Agent": USER_AGENT}
        self._token: TokenFile | None = None
        if isinstance(cfg, HttpAuthConfigBase):
            self._headers.update(cfg.headers)
            if cfg.basic_auth is not None:
                pair = f"{cfg.basic_auth.username}:{cfg.basic_auth.password}".encode()
                self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            elif cfg.bearer_token is not None:
                self._headers["Authorization"] = f"Bearer {cfg.bearer_token.strip()}"
            elif cfg.bearer_token_file is not None:
                self._token = TokenFile(cfg.bearer_token_file)

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes = b"",
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        """One request; transport errors (and CredentialsError, TlsSetupError) propagate."""
        client = await self._open()
        sent = {**self._headers, **(headers or {})}
        if self._token is not None:
            sent["Authorization"] = f"Bearer {self._token.read()}"
        call = client.request(method, url, content=content or None, headers=sent, params=dict(params) if params else None)
        async with asyncio.timeout(self.timeout_s):
            response = await call
        return Reply(response.status_code, response.headers, response.content)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            if self._loop is asyncio.get_running_loop():
                await client.aclose()

    async def _open(self) -> httpx.AsyncClient:
        """The httpx client of the running loop (a client made in a loop that has ended cannot be used)."""
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        verify: Any = True
        if self._tls is not None:
            verify = await asyncio.to_thread(ssl_context, self._tls)
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s, connect=min(CONNECT_TIMEOUT_MAX_S, self.timeout_s)),
                verify=verify,
                trust_env=False,
                proxy=self._proxy,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=self._max_connections, max_keepalive_connections=self._max_connections),
            )
            self._loop = loop
        return self._client


def ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """The TLS context of a `tls` block (blocking: reads the files). Raises TlsSetupError."""
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


class TokenFile:
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


def tls_failure(exc: BaseException) -> BaseException | None:
    """The TLS problem behind a transport error (a certificate, a handshake), or None: a TLS setup error, or an
    SSLError in its cause chain other than a connection closed mid-stream."""
    if isinstance(exc, TlsSetupError):
        return exc
    tls = caused_by(exc, ssl.SSLError)
    return tls if tls is not None and not isinstance(tls, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) else None


def transport_outcome(exc: BaseException) -> Outcome:
    """What an exception from `send` means: credentials and TLS setup block; the network retries."""
    if isinstance(exc, CredentialsError):
        return Blocked(f"credentials: {exc}")
    tls = tls_failure(exc)
    if tls is not None:
        return Blocked(f"tls_error: {short(str(tls))}")
    if isinstance(exc, (httpx.TimeoutException, TimeoutError, asyncio.TimeoutError)):
        return Retry(f"timeout: {type(exc).__name__}")
    if isinstance(exc, httpx.ConnectError):
        return Retry(f"connect_error: {short(str(exc))}")
    if isinstance(exc, httpx.TransportError):
        return Retry(f"transport_error: {type(exc).__name__}: {short(str(exc))}")
    return Retry(f"error: {type(exc).__name__}: {short(str(exc))}")


def without_secrets(outcome: Outcome, secrets: Sequence[str]) -> Outcome:
    """The outcome with any of `secrets` in its reason masked (a transport error's text could quote a URL)."""
    if isinstance(outcome, Delivered) or not outcome.reason:
        return outcome
    reason = clean = outcome.reason
    for secret in secrets:
        if len(secret) >= 4:
            clean = clean.replace(secret, "***")
    return outcome if clean == reason else dataclasses.replace(outcome, reason=clean)


def body_text(body: bytes) -> str:
    """An answer's body as one short line of text, for a reason."""
    return short(body.decode("utf-8", "replace"))


def short(text: str, limit: int = MAX_REASON) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

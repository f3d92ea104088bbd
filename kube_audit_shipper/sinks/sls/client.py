"""The HTTP side of SLS, shared by the sink and `sls ensure`: where to send, how to sign, what an error says.

Host: `<project>.<endpoint host>` (HTTPS unless the endpoint is an http:// URL). When the endpoint host is an
IP address, or `project_in_host: false`, the connection goes to the endpoint itself and the project travels in
the `x-log-project` header; for an IP endpoint the Host header is still `<project>.<ip>[:port]`, which is what
Logtail (`PreparePostLogStoreLogsRequest`, isHostIp) and the Python SDK (`_send`) send to private endpoints.

Every request is signed just before it is sent, with the time corrected by the offset learned from a
`RequestTimeExpired` answer (`clock_offset_s`), and sent with the HTTP client the sink's context made
(timeout, TLS, proxy: the keys every HTTP sink has).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from kube_audit_shipper import __version__
from kube_audit_shipper.delivery.context import HttpClient
from kube_audit_shipper.delivery.contract import Reply
from kube_audit_shipper.sinks.sls.auth import CredentialSource, content_md5, sign_request
from kube_audit_shipper.sinks.sls.config import SlsSinkConfig, endpoint_parts, is_ip

API_VERSION = "0.6.0"
USER_AGENT = f"kube-audit-shipper/{__version__}"


@dataclass(frozen=True, slots=True)
class SlsError:
    """What an SLS error answer says (errorCode/errorMessage body, x-log-requestid header)."""

    status: int
    code: str
    message: str
    request_id: str

    def __str__(self) -> str:
        rid = f", request id {self.request_id}" if self.request_id else ""
        return f"{self.code} (HTTP {self.status}{rid}): {self.message}"


def parse_error(reply: Reply) -> SlsError:
    code, message = "", ""
    try:
        data = json.loads(reply.body) if reply.body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        code = str(data.get("errorCode") or "")
        message = str(data.get("errorMessage") or "")
    if not code:
        # Logtail: a non-200 without a JSON body is InternalServerError from 500 up, else BadResponse
        code = "InternalServerError" if reply.status >= 500 else "BadResponse"
        message = message or reply.body[:200].decode("utf-8", "replace").strip() or f"HTTP {reply.status} without an SLS error body"
    return SlsError(reply.status, code, message, header(reply.headers, "x-log-requestid"))


def header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        for k, v in headers.items():
            if k.lower() == lower:
                return v
        return ""
    return value


def server_time(headers: Mapping[str, str]) -> float | None:
    """The server's clock from its answer: `x-log-time` (unix seconds) or `Date`."""
    raw = header(headers, "x-log-time")
    if raw:
        try:
            return float(raw)
        except ValueError:
            pass
    raw = header(headers, "Date")
    if raw:
        try:
            return parsedate_to_datetime(raw).timestamp()
        except (TypeError, ValueError, IndexError):
            return None
    return None


class SlsClient:
    """Signs and sends requests to one project of one endpoint, with `http`."""

    def __init__(self, cfg: SlsSinkConfig, credentials: CredentialSource, http: HttpClient) -> None:
        self.cfg = cfg
        self.credentials = credentials
        self.http = http
        scheme, host, port = endpoint_parts(cfg.endpoint)
        self.scheme = scheme
        hostport = f"[{host}]" if ":" in host else host
        if port is not None:
            hostport += f":{port}"
        ip = is_ip(host)
        in_host = cfg.project_in_host if cfg.project_in_host is not None else not ip
        self.project_in_host = in_host
        if in_host:
            self.base_url = f"{scheme}://{cfg.project}.{hostport}"
            self.host_header = f"{cfg.project}.{hostport}"
        else:
            self.base_url = f"{scheme}://{hostport}"
            self.host_header = f"{cfg.project}.{hostport}" if ip else hostport
        self.version = cfg.signature_version
        self.region = cfg.effective_region
        self.clock_offset_s = 0.0

    # -- time ----------------------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.clock_offset_s

    def learn_clock(self, headers: Mapping[str, str]) -> float | None:
        """Set the offset to the server's clock from an answer's headers; returns the new offset (or None)."""
        server = server_time(headers)
        if server is None:
            return None
        self.clock_offset_s = server - time.time()
        return self.clock_offset_s

    # -- requests ------------------------------------------------------------------------------------
    def base_headers(self, *, content_type: str | None, body: bytes, raw_size: int | None = None) -> dict[str, str]:
        headers = {"x-log-apiversion": API_VERSION, "x-log-bodyrawsize": str(len(body) if raw_size is None else raw_size), "User-Agent": USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        if body:
            headers["Content-MD5"] = content_md5(body)
        if not self.project_in_host:
            headers["x-log-project"] = self.cfg.project
        return headers

    def sign(self, method: str, resource: str, params: Mapping[str, str], headers: dict[str, str], body: bytes, payload_sha256: str | None = None) -> None:
        """Sign in place (raises CredentialsError when there are no credentials)."""
        creds = self.credentials.get()
        headers["Host"] = self.host_header
        sign_request(
            method=method,
            resource=resource,
            params=params,
            headers=headers,
            body=body,
            creds=creds,
            now=self.now(),
            version=self.version,
            region=self.region,
            payload_sha256=payload_sha256,
        )

    async def request(
        self,
        method: str,
        resource: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
        payload_sha256: str | None = None,
    ) -> Reply:
        """Sign and send one request; transport errors propagate. `headers` (already built, e.g. by the sink's
        encode) are copied, never changed."""
        params = dict(params or {})
        hdrs = dict(headers) if headers is not None else self.base_headers(content_type=content_type, body=body)
        self.sign(method, resource, params, hdrs, body, payload_sha256)
        return await self.http.request(method, self.base_url + resource, params=params or None, content=body, headers=hdrs)

    async def aclose(self) -> None:
        await self.http.aclose()

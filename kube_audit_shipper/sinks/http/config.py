"""Config keys every HTTP alert target shares: timeout, TLS, proxy, and (alertmanager, webhook) authentication.

The TLS and basic-auth blocks are the Loki sink's own structs, so every HTTP sink is configured alike:

```yaml
  timeout_s: 10
  tls: {ca_file: /etc/ssl/internal-ca.pem, cert_file: ..., key_file: ...}
  proxy_url: http://proxy.internal:3128
  basic_auth: {username: am, password: "${file:/run/secrets/am-password}"}   # or bearer_token / bearer_token_file
  headers: {X-Scope-OrgID: team-a}
```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from kube_audit_shipper.delivery.config import SinkConfigBase


class BasicAuth(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=1, description="basic auth user (e.g. the tenant of a gateway)", examples=["tenant-1"])]
    password: Annotated[str, msgspec.Meta(description="use ${VAR} or ${file:...}", examples=["${HTTP_PASSWORD}"])]


class TlsConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    ca_file: Annotated[str | None, msgspec.Meta(description="PEM CA bundle the server certificate is checked against; absent: the system CAs")] = None
    cert_file: Annotated[str | None, msgspec.Meta(description="PEM client certificate (mutual TLS); needs key_file")] = None
    key_file: Annotated[str | None, msgspec.Meta(description="PEM private key of cert_file")] = None
    insecure_skip_verify: Annotated[
        bool, msgspec.Meta(description="do not check the server certificate (tests only: anyone can read and forge the traffic)")
    ] = False


#: headers an alert target sets itself
RESERVED_HEADERS = frozenset({"content-type", "content-encoding", "content-length", "host", "transfer-encoding"})


class HttpTargetBase(SinkConfigBase, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Keys of every HTTP alert target (subclasses add the URL and the backend's own keys)."""

    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600, description="whole-request timeout of one attempt")] = 10.0
    tls: Annotated[
        TlsConfig | None,
        msgspec.Meta(description="https only: CA, client certificate; the server certificate is always checked unless insecure_skip_verify"),
    ] = None
    proxy_url: Annotated[str | None, msgspec.Meta(description="HTTP(S) proxy; environment proxy variables are not used")] = None

    def _http_problems(self, url: str, key: str, *, query_ok: bool = False) -> list[str]:
        problems = url_problems(url, key, tls=self.tls is not None, query_ok=query_ok)
        if self.tls is not None and (self.tls.cert_file is None) != (self.tls.key_file is None):
            problems.append("tls: cert_file and key_file go together")
        if self.proxy_url is not None and urlsplit(self.proxy_url).scheme not in ("http", "https"):
            problems.append(f"proxy_url {self.proxy_url!r}: expected http://host:port or https://...")
        return problems


class AuthTargetBase(HttpTargetBase, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """HTTP keys plus authentication and extra headers (Alertmanager, generic webhook receivers)."""

    basic_auth: Annotated[BasicAuth | None, msgspec.Meta(description="HTTP basic auth")] = None
    bearer_token: Annotated[str | None, msgspec.Meta(description="Authorization: Bearer token; use ${VAR} or ${file:...}")] = None
    bearer_token_file: Annotated[str | None, msgspec.Meta(description="file holding the bearer token, read again whenever it changes (rotated tokens)")] = None
    headers: Annotated[dict[str, str], msgspec.Meta(description="extra HTTP headers sent with every request")] = msgspec.field(default_factory=dict)

    def _auth_problems(self) -> list[str]:
        problems = []
        chosen = [k for k in ("basic_auth", "bearer_token", "bearer_token_file") if getattr(self, k) is not None]
        if len(chosen) > 1:
            problems.append(f"{' and '.join(chosen)}: choose one way to authenticate")
        for header, value in self.headers.items():
            lower = header.lower()
            if lower in RESERVED_HEADERS:
                problems.append(f"headers.{header}: set by the target itself")
            elif lower == "authorization" and chosen:
                problems.append(f"headers.{header}: conflicts with {chosen[0]}")
            elif not header or any(c in header for c in " \t\r\n:") or any(c in value for c in "\r\n"):
                problems.append(f"headers.{header}: not a valid HTTP header")
        if self.bearer_token is not None and not self.bearer_token.strip():
            problems.append("bearer_token is empty")
        return problems


def base_problems(check: Callable[[], None]) -> list[str]:
    """The problem SinkConfigBase's own check (`super().__post_init__`) finds, as a list, so a target reports it along with its own."""
    try:
        check()
    except ValueError as exc:
        return [str(exc)]
    return []


def url_problems(url: str, key: str = "url", *, tls: bool = False, query_ok: bool = False) -> list[str]:
    """What is wrong with an http(s) URL in the config (never echoing a query, which may hold a token)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"{key}: expected http://host[:port][/path] or https://..."]
    problems = []
    if parts.username is not None or parts.password is not None:
        problems.append(f"{key}: no credentials in the URL (URLs end up in logs); use basic_auth or a token key")
    if (parts.query and not query_ok) or parts.fragment:
        problems.append(f"{key}: no query or fragment")
    if tls and parts.scheme != "https":
        problems.append(f"tls is set but {key} is not https")
    return problems

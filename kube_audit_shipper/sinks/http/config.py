"""Config keys of the HTTP sinks beyond the shared block: authentication and extra headers, and URL checks.

Every HTTP sink (Loki, SLS, the alert targets) has the same `timeout_s` / `tls` / `proxy_url` keys
(delivery/config.py HttpSinkConfigBase), read by the one HTTP client factory (sinks/http/client.py); the
ones that authenticate with HTTP auth (Loki, Alertmanager, webhook) add the same auth block:

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

from kube_audit_shipper.delivery.config import HttpSinkConfigBase


class BasicAuth(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=1, description="basic auth user (e.g. the tenant of a gateway)", examples=["tenant-1"])]
    password: Annotated[str, msgspec.Meta(description="use ${VAR} or ${file:...}", examples=["${HTTP_PASSWORD}"])]


#: headers an HTTP sink sets itself
RESERVED_HEADERS = frozenset({"content-type", "content-encoding", "content-length", "host", "transfer-encoding"})


class HttpAuthConfigBase(HttpSinkConfigBase, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The HTTP keys plus authentication and extra headers (Loki, Alertmanager, generic webhook receivers)."""

    basic_auth: Annotated[BasicAuth | None, msgspec.Meta(description="HTTP basic auth")] = None
    bearer_token: Annotated[str | None, msgspec.Meta(description="Authorization: Bearer token; use ${VAR} or ${file:...}")] = None
    bearer_token_file: Annotated[str | None, msgspec.Meta(description="file holding the bearer token, read again whenever it changes (rotated tokens)")] = None
    headers: Annotated[dict[str, str], msgspec.Meta(description="extra HTTP headers sent with every request")] = msgspec.field(default_factory=dict)

    def auth_problems(self, reserved: frozenset[str] = RESERVED_HEADERS, why_reserved: str = "set by the target itself") -> list[str]:
        problems = []
        chosen = [
            k for k, v in (("basic_auth", self.basic_auth), ("bearer_token", self.bearer_token), ("bearer_token_file", self.bearer_token_file)) if v is not None
        ]
        if len(chosen) > 1:
            problems.append(f"{' and '.join(chosen)}: choose one way to authenticate")
        for header, value in self.headers.items():
            lower = header.lower()
            if lower in reserved:
                problems.append(f"headers.{header}: {why_reserved}")
            elif lower == "authorization" and chosen:
                problems.append(f"headers.{header}: conflicts with {chosen[0]}")
            elif not header or any(c in header for c in " \t\r\n:") or any(c in value for c in "\r\n"):
                problems.append(f"headers.{header}: not a valid HTTP header")
        if self.bearer_token is not None and not self.bearer_token.strip():
            problems.append("bearer_token is empty")
        return problems


def endpoint_problems(cfg: HttpSinkConfigBase, url: str, key: str = "url", *, query_ok: bool = False) -> list[str]:
    """What is wrong with an HTTP sink's URL, TLS and proxy keys."""
    return url_problems(url, key, tls=cfg.tls is not None, query_ok=query_ok) + cfg.http_problems()


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

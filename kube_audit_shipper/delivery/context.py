"""What every sink is given besides its own config: `XSink(cfg, ctx)`.

A sink needs a few things from the agent around it, and gets all of them here rather than each reaching for
its own: the node's name (tags, labels, object keys), the state directory (a sink that keeps files of its
own, S3 staging, keeps them under `<state_dir>/<kind>/<name>`), the configured input paths (the SLS
`__path__` tag), and the HTTP client factory every HTTP sink makes its client with: one place that reads the
shared `timeout_s` / `tls` / `proxy_url` keys (delivery/config.py HttpSinkConfigBase) and authentication,
loads TLS files off the event loop, and never follows redirects or environment proxies. Tests hand in a
factory of their own to answer without a network.

The registries (sinks/registry.py, sinks/alert_registry.py) pass the context to every sink and alert target;
how long a sink may take to close is not part of it but an argument of `Sink.aclose(deadline)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kube_audit_shipper.delivery.config import HttpSinkConfigBase
from kube_audit_shipper.delivery.contract import Reply


class HttpClient(Protocol):
    """One HTTP client of one sink: one request per call, within the config's timeout_s; transport errors
    propagate (the sink's classify says what they mean)."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes = b"",
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply: ...

    async def aclose(self) -> None: ...


class HttpClientFactory(Protocol):
    def __call__(self, cfg: HttpSinkConfigBase, *, max_connections: int = 2) -> HttpClient:
        """A client for the sink configured by `cfg` (its timeout, TLS, proxy and, when it has them, its
        authentication keys), with at most `max_connections` connections open."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class SinkContext:
    node: str  # this node's name
    state_dir: Path  # the agent's state directory
    http: HttpClientFactory
    input_paths: tuple[str, ...] = ()  # the configured input paths (globs), in config order

    def state_path(self, kind: str, name: str) -> Path:
        """Where a sink of type `kind` named `name` keeps files of its own."""
        return self.state_dir / kind / name

"""`metrics:` section."""

from __future__ import annotations

from typing import Annotated

import msgspec


class MetricsConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    listen: Annotated[
        Annotated[str, msgspec.Meta(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$")] | None,
        msgspec.Meta(description="host:port of /metrics, /healthz and /readyz; null disables the endpoint"),
    ] = "127.0.0.1:9880"

    def address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def __post_init__(self) -> None:
        addr = self.address()
        if addr is not None and not 0 <= addr[1] <= 65535:
            raise ValueError(f"metrics.listen port {addr[1]} is out of range")

"""What the HTTP sinks share as sinks: encoding by an encoder object, one HTTP client from the context, closed at the end.

Loki and the alert targets (Alertmanager, webhook, Slack, DingTalk) each have an encoder (their encode.py: a
batch to requests, a too-large request to smaller ones) and a client made by the HTTP client factory of their
SinkContext; they differ in `send` (URL, signing, rate windows) and `classify` (their replies.py).
"""

from __future__ import annotations

from typing import Protocol

from kube_audit_shipper.delivery.context import HttpClient
from kube_audit_shipper.delivery.contract import Request, Sink


class RequestEncoder(Protocol):
    def encode(self, records: list[bytes]) -> list[Request]: ...

    def split(self, request: Request, records: list[bytes]) -> list[Request]: ...


class HttpSink(Sink):
    """A sink whose `encode`/`split` are its encoder's and whose client is closed by `aclose`."""

    _encoder: RequestEncoder
    _http: HttpClient

    def encode(self, records: list[bytes]) -> list[Request]:
        return self._encoder.encode(records)

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        return self._encoder.split(request, records)

    async def aclose(self, deadline: float | None = None) -> None:
        await self._http.aclose()

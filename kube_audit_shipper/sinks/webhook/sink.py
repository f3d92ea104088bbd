"""`type: webhook`: alerts POSTed as Alertmanager's webhook body (version 4) to any receiver that reads it.

Encoding (encode.py), answers (replies.py), one POST per attempt with the shared HTTP client (http.py:
basic auth, bearer token or token file, extra headers, TLS, proxy); endsAt is stamped at each attempt.
"""

from __future__ import annotations

import time

from kube_audit_shipper.delivery.contract import Outcome, Reply, Request
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.http.client import HttpClient
from kube_audit_shipper.sinks.webhook import replies
from kube_audit_shipper.sinks.webhook.config import WebhookTargetConfig
from kube_audit_shipper.sinks.webhook.encode import WebhookEncoder


class WebhookSink:
    max_concurrency: int | None = None

    def __init__(self, cfg: WebhookTargetConfig, *, node: str, state_dir: str = "") -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._encoder = WebhookEncoder(cfg, node=node)
        self._http = HttpClient(cfg)

    def encode(self, records: list[bytes]) -> list[Request]:
        return self._encoder.encode(records)

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        return self._encoder.split(request, records)

    async def send(self, request: Request) -> Reply:
        alert_format.refuse_invalid(request)
        return await self._http.post(self.cfg.url, self._encoder.stamp(request, time.time_ns()), request.headers)

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        return replies.classify(request, result)

    async def aclose(self) -> None:
        await self._http.aclose()

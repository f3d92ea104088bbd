"""`type: webhook`: alerts POSTed as Alertmanager's webhook body (version 4) to any receiver that reads it.

Encoding (encode.py), answers (replies.py), one POST per attempt with the HTTP client of the sink's context
(sinks/http/client.py: basic auth, bearer token or token file, extra headers, TLS, proxy); endsAt is stamped
at each attempt.
"""

from __future__ import annotations

import time

from kube_audit_shipper.delivery.context import SinkContext
from kube_audit_shipper.delivery.contract import Outcome, Reply, Request
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.http.sink import HttpSink
from kube_audit_shipper.sinks.webhook import replies
from kube_audit_shipper.sinks.webhook.config import WebhookTargetConfig
from kube_audit_shipper.sinks.webhook.encode import WebhookEncoder


class WebhookSink(HttpSink):
    max_concurrency: int | None = None
    _encoder: WebhookEncoder

    def __init__(self, cfg: WebhookTargetConfig, ctx: SinkContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._encoder = WebhookEncoder(cfg, node=ctx.node)
        self._http = ctx.http(cfg, max_connections=4)

    async def send(self, request: Request) -> Reply:
        alert_format.refuse_invalid(request)
        return await self._http.request("POST", self.cfg.url, content=self._encoder.stamp(request, time.time_ns()), headers=request.headers)

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        return replies.classify(request, result)

"""`type: alertmanager`: alerts to Alertmanager's API v2 (`POST {url}/api/v2/alerts`, a JSON array).

Encoding (encode.py): one Alertmanager alert per detection (labels alertname/severity/cluster/node/alert_id/group,
annotations summary/description), requests of at most `max_alerts_per_request` alerts and `max_request_bytes`;
endsAt is stamped at each attempt. Answers (replies.py). `send` is one POST (the context's HTTP client: auth, TLS, proxy).

Alertmanager in HA: give each instance its own target (Prometheus does the same: every instance gets every
alert; the cluster's gossip deduplicates notifications). Alertmanager keeps alerts in memory and in its
snapshot; a one-off detection resolves at endsAt (resolve_after_s after it was sent, at the latest).
"""

from __future__ import annotations

import time

from kube_audit_shipper.delivery.context import SinkContext
from kube_audit_shipper.delivery.contract import Outcome, Reply, Request
from kube_audit_shipper.sinks.alertmanager import replies
from kube_audit_shipper.sinks.alertmanager.config import AlertmanagerTargetConfig
from kube_audit_shipper.sinks.alertmanager.encode import AlertmanagerEncoder
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.http.sink import HttpSink

ALERTS_PATH = "/api/v2/alerts"


class AlertmanagerSink(HttpSink):
    max_concurrency: int | None = None  # Alertmanager takes alerts in any order (startsAt comes with each)
    _encoder: AlertmanagerEncoder

    def __init__(self, cfg: AlertmanagerTargetConfig, ctx: SinkContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        base = cfg.url.rstrip("/")
        self.alerts_url = base if base.endswith(ALERTS_PATH) else base + ALERTS_PATH
        self._encoder = AlertmanagerEncoder(cfg, node=ctx.node)
        self._http = ctx.http(cfg, max_connections=4)

    async def send(self, request: Request) -> Reply:
        alert_format.refuse_invalid(request)
        body = self._encoder.stamp(request, time.time_ns())
        return await self._http.request("POST", self.alerts_url, content=body, headers=request.headers)

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        return replies.classify(request, result)

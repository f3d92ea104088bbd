"""`type: loki`: push audit events to Grafana Loki (`POST {url}/loki/api/v1/push`).

Encoding (encode.py): one stream per label set (fixed labels, the node, `label_fields` values), the line is
the event as compact JSON, the timestamp its `stageTimestamp` in nanoseconds, structured metadata from
`structured_metadata` fields; snappy-compressed protobuf (default) or JSON (gzip by default); requests of at
most `max_request_bytes` uncompressed, whatever the batch size.

Order: a stream's entries go out in timestamp order within a request and from one request to the next
(encode.py), and `max_concurrency = 1` keeps them in that order across batches and retries: a request is
sent again, or split, before anything after it is sent. Loki 3 would take entries up to an hour out of order,
but not older than that (`entry too far behind`), and queries of equal timestamps show them in arrival order.

Answers (replies.py): Delivered, Retry (429, 5xx, transport), Split (request too large), Rejected (400 per
entry: Loki stored the rest of the request), Blocked (401/403/404, TLS, credentials, a body Loki cannot read).

`send` is one POST with the HTTP client of the sink's context (sinks/http/client.py: timeout, TLS, proxy,
basic auth, bearer token or token file, extra headers), plus X-Scope-OrgID for `tenant_id`.
"""

from __future__ import annotations

from kube_audit_shipper.delivery.context import SinkContext
from kube_audit_shipper.delivery.contract import Outcome, Reply, Request
from kube_audit_shipper.sinks.http.sink import HttpSink
from kube_audit_shipper.sinks.loki import replies
from kube_audit_shipper.sinks.loki.config import LokiSinkConfig
from kube_audit_shipper.sinks.loki.encode import PushEncoder

PUSH_PATH = "/loki/api/v1/push"


class LokiSink(HttpSink):
    max_concurrency: int | None = 1  # a stream's entries must reach Loki in order (see the module docstring)
    _encoder: PushEncoder

    def __init__(self, cfg: LokiSinkConfig, ctx: SinkContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._encoder = PushEncoder(cfg, node=ctx.node)
        base = cfg.url.rstrip("/")
        self.push_url = base if base.endswith(PUSH_PATH) else base + PUSH_PATH
        self._tenant = {"X-Scope-OrgID": cfg.tenant_id} if cfg.tenant_id else {}
        self._http = ctx.http(cfg, max_connections=2)

    @property
    def trimmed_events(self) -> int:
        """Events cut to Metadata level because they were over max_line_bytes."""
        return self._encoder.trimmed_events

    async def send(self, request: Request) -> Reply:
        return await self._http.request("POST", self.push_url, content=request.payload, headers={**self._tenant, **request.headers})

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        return replies.classify(request, result)

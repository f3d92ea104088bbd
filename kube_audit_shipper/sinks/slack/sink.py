"""`type: slack`: alerts to a Slack channel through an incoming webhook, as Block Kit digests.

Encoding (encode.py): digests within Slack's block limits. Rate (webhook/throttle.py): at most `rate_messages`
per `rate_window_s`, one request at a time; a 429 pauses every message for its Retry-After. Answers (replies.py).
The webhook URL is the credential: no reason, log line or exception text carries it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

from kube_audit_shipper.delivery.answers import retry_after
from kube_audit_shipper.delivery.context import SinkContext
from kube_audit_shipper.delivery.contract import Outcome, Reply, Request
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.http.client import without_secrets
from kube_audit_shipper.sinks.http.sink import HttpSink
from kube_audit_shipper.sinks.http.throttle import SendWindow
from kube_audit_shipper.sinks.slack import replies
from kube_audit_shipper.sinks.slack.config import SlackTargetConfig
from kube_audit_shipper.sinks.slack.encode import BlocksEncoder


class SlackSink(HttpSink):
    max_concurrency: int | None = 1  # the rate window counts one attempt at a time
    _encoder: BlocksEncoder

    def __init__(self, cfg: SlackTargetConfig, ctx: SinkContext, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._encoder = BlocksEncoder(cfg, node=ctx.node)
        self._http = ctx.http(cfg, max_connections=4)
        self.window = SendWindow(cfg.rate_messages, cfg.rate_window_s, clock=clock)
        self._secrets = (cfg.webhook_url, urlsplit(cfg.webhook_url).path)

    async def send(self, request: Request) -> Reply:
        alert_format.refuse_invalid(request)
        self.window.start()
        try:
            reply = await self._http.request("POST", self.cfg.webhook_url, content=request.payload, headers=request.headers)
        finally:
            self.window.finish()
        if reply.status == 429:
            after = retry_after(reply.headers)
            self.window.pause(replies.DEFAULT_RATE_LIMIT_WAIT_S if after is None else after, "HTTP 429")
        return reply

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        return without_secrets(replies.classify(request, result), self._secrets)

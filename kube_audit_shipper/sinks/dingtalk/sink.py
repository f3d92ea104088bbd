"""`type: dingtalk`: alerts to a DingTalk group through its custom robot, as markdown digests.

Encoding (encode.py): digests of the batch's alerts within DingTalk's message size. Rate (webhook/throttle.py):
at most `rate_messages` per `rate_window_s`; a message over it is not sent: `send` raises LocalThrottle at once
and `classify` answers Retry(after_s) so the engine waits; after errcode 130101 nothing is sent for
`throttle_pause_s`. Requests go one at a time (`max_concurrency = 1`), so the window counts exactly.
Signature (sign.py): a fresh timestamp and sign for every attempt. Answers (replies.py): the errcode decides.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote

from kube_audit_shipper.delivery.context import SinkContext
from kube_audit_shipper.delivery.contract import Outcome, Reply, Request
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.dingtalk import replies
from kube_audit_shipper.sinks.dingtalk.config import DingTalkTargetConfig
from kube_audit_shipper.sinks.dingtalk.encode import DigestEncoder
from kube_audit_shipper.sinks.dingtalk.sign import send_url
from kube_audit_shipper.sinks.http.client import without_secrets
from kube_audit_shipper.sinks.http.sink import HttpSink
from kube_audit_shipper.sinks.http.throttle import SendWindow


class DingTalkSink(HttpSink):
    max_concurrency: int | None = 1  # the rate window counts one attempt at a time
    _encoder: DigestEncoder

    def __init__(
        self,
        cfg: DingTalkTargetConfig,
        ctx: SinkContext,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._encoder = DigestEncoder(cfg, node=ctx.node)
        self._http = ctx.http(cfg, max_connections=4)
        self.window = SendWindow(cfg.rate_messages, cfg.rate_window_s, clock=clock)
        self._now_ms = wall_clock_ms
        self._secrets = (cfg.access_token, quote(cfg.access_token, safe=""), *((cfg.secret,) if cfg.secret else ()))

    async def send(self, request: Request) -> Reply:
        alert_format.refuse_invalid(request)
        self.window.start()
        try:
            url = send_url(self.cfg.url, self.cfg.access_token, self.cfg.secret, self._now_ms())
            reply = await self._http.request("POST", url, content=request.payload, headers=request.headers)
        finally:
            self.window.finish()
        answer = replies.errcode(reply.body) if reply.status == 200 else None
        if answer is not None and (answer[0] in replies.THROTTLED or "too fast" in answer[1]):
            self.window.pause(self.cfg.throttle_pause_s, f"errcode {answer[0]}")
        return reply

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        return without_secrets(replies.classify(request, result, throttle_pause_s=self.cfg.throttle_pause_s), self._secrets)

"""Batches of alerts as Slack Block Kit digests for an incoming webhook (`{"text": ..., "blocks": [...]}`).

    header   "kube-audit: 3 alerts (1 critical, 2 high)"                 (plain_text, ≤ 150 characters)
    section  mention (<!here>) when the digest holds a serious alert
    per alert:
      section  "*CRITICAL* · *privileged-pod*\n<summary>" + up to 10 fields "*namespace*\ndefault"
      context  time · node · cluster · id · audit ID · tags               (≤ 10 elements)
      divider  (between alerts)

Slack's limits are kept: 50 blocks a message (so at most 16 alerts), 3000 characters per section text,
2000 per field, 150 per header, 10 fields and 10 context elements; `text` is the notification fallback
(≤ 3000 characters). Alert values are escaped for mrkdwn (&, <, >), so an alert cannot @mention anyone or
forge a link; only the configured `mention` is Slack markup.
"""

from __future__ import annotations

from typing import Any

import msgspec

from kube_audit_shipper.delivery.contract import Request
from kube_audit_shipper.sinks.alerts import digest
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.alerts.digest import Item
from kube_audit_shipper.sinks.slack.config import SlackTargetConfig

_ENCODE = msgspec.json.Encoder().encode
JSON = "application/json; charset=utf-8"
HEADER_CHARS = 150
SECTION_CHARS = 3000
FIELD_CHARS = 2000
MAX_FIELDS = 10
MAX_CONTEXT = 10
TEXT_CHARS = 3000
VALUE_CHARS = 300
BASE_BYTES = 4096  # header, mention, fallback text and the JSON around the blocks
EMOJI = {
    "critical": ":rotating_light:",
    "high": ":red_circle:",
    "medium": ":large_orange_circle:",
    "low": ":large_yellow_circle:",
    "info": ":information_source:",
}


def escape(text: str) -> str:
    """Text for mrkdwn: &, < and > are Slack's control characters (links, mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


class BlocksEncoder:
    def __init__(self, cfg: SlackTargetConfig, *, node: str) -> None:
        self.cfg = cfg
        self.node = node
        self._mention_rank = alert_format.severity_rank(cfg.mention_min_severity)

    def encode(self, records: list[bytes]) -> list[Request]:
        items, bad = digest.items_of(records)
        return alert_format.invalid_requests(bad) + self._requests(items)

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        return [r for half in digest.halves(request.meta.get("items", [])) for r in self._requests(half)]

    def _requests(self, items: list[Item]) -> list[Request]:
        blocks = {item.key: self.alert_blocks(item) for item in items}
        sizes = {key: len(_ENCODE(b)) + 1 for key, b in blocks.items()}
        groups = digest.pack(
            items, max_items=self.cfg.max_alerts_per_message, max_bytes=self.cfg.max_message_bytes, base_bytes=BASE_BYTES, size_of=lambda i: sizes[i.key]
        )
        out = []
        for group in groups:
            body = self.body(group, [blocks[item.key] for item in group])
            out.append(Request(payload=body, indices=digest.indices(group), headers={"Content-Type": JSON}, raw_bytes=len(body), meta={"items": group}))
        return out

    def alert_blocks(self, item: Item) -> list[dict[str, Any]]:
        """A section and a context block for one alert."""
        alert = item.alert
        head = f"{EMOJI.get(alert.severity, '')} *{alert.severity.upper()}* · *{escape(alert.rule)}*".strip()
        section: dict[str, Any] = {"type": "section", "text": mrkdwn(cut(f"{head}\n{escape(' '.join(alert.summary.split()))}", SECTION_CHARS))}
        fields = alert_format.display_fields(alert, limit=VALUE_CHARS)
        if len(fields) > MAX_FIELDS:  # the last field says what did not fit
            rest = fields[MAX_FIELDS - 1 :]
            fields = [*fields[: MAX_FIELDS - 1], ("more", "; ".join(f"{n}: {t}" for n, t in rest))]
        if fields:
            section["fields"] = [mrkdwn(cut(f"*{escape(name)}*\n{escape(text)}", FIELD_CHARS)) for name, text in fields]
        context = [escape(alert.time)]
        if alert.node or self.node:
            context.append(f"node {escape(alert.node or self.node)}")
        if alert.cluster:
            context.append(f"cluster {escape(alert.cluster)}")
        context.append(f"id {escape(item.key)}")
        if alert.audit_ids:
            more = f" (+{len(alert.audit_ids) - 1})" if len(alert.audit_ids) > 1 else ""
            context.append(f"audit {escape(alert.audit_ids[0])}{more}")
        tags = alert_format.display_value(", ".join(alert.tags), limit=VALUE_CHARS)
        if tags:
            context.append(escape(tags))
        return [section, {"type": "context", "elements": [mrkdwn(cut(c, SECTION_CHARS)) for c in context[:MAX_CONTEXT]]}]

    def body(self, group: list[Item], per_alert: list[list[dict[str, Any]]]) -> bytes:
        cfg = self.cfg
        n = len(group)
        counts = digest.severity_counts(group)
        header = cut(f"{cfg.title}: {n} alert{'s' if n != 1 else ''} ({counts})", HEADER_CHARS)
        blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}}]
        mention = cfg.mention if cfg.mention and any(alert_format.severity_rank(i.alert.severity) <= self._mention_rank for i in group) else None
        if mention:
            blocks.append({"type": "section", "text": mrkdwn(mention)})
        for k, alert_blocks in enumerate(per_alert):
            if k:
                blocks.append({"type": "divider"})
            blocks.extend(alert_blocks)
        rules = ", ".join(dict.fromkeys(i.alert.rule for i in group))
        text = cut(f"{(mention + ' ') if mention else ''}{escape(header)}: {escape(rules)}", TEXT_CHARS)
        return _ENCODE({"text": text, "blocks": blocks})

"""Batches of alerts as DingTalk markdown digests (`{"msgtype": "markdown", "markdown": {"title", "text"}, "at": {...}}`).

A digest (webhook/digest.py: distinct alerts, most severe first, as many per message as fit):

    #### kube-audit: 3 alerts (1 critical, 2 high)
    **CRITICAL · privileged-pod** · 2026-11-22T10:00:00Z
    Privileged pod created by alice in default
    - **namespace**: default
    - **pod**: web-1
    - node cp-1 · cluster prod · id 5f1c… · audit 8d2e… (+1)

    ---
    ...

`title` (shown in notifications) is the configured title and the first alert's rule. Values are one line,
at most 256 characters; markdown's emphasis, code and link characters in them are escaped. When a digest
holds an alert of `mention_min_severity` or worse, `at` names the configured people and the text ends with
their @mobile (DingTalk shows a mention only when the text has it). Bodies stay within `max_message_bytes`.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from kube_audit_shipper.delivery.contract import Request
from kube_audit_shipper.sinks.alerts import digest
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.alerts.digest import Item
from kube_audit_shipper.sinks.dingtalk.config import DingTalkTargetConfig

_ENCODE = msgspec.json.Encoder().encode
JSON = "application/json;charset=utf-8"
FIELD_CHARS = 256
HEADER_BYTES = 512  # heading, title, "at" and the JSON around the text
_MARKUP = re.compile(r"([\\`*_\[\]<>#|~])")


def escape(text: str) -> str:
    return _MARKUP.sub(r"\\\1", text)


class DigestEncoder:
    def __init__(self, cfg: DingTalkTargetConfig, *, node: str) -> None:
        self.cfg = cfg
        self.node = node
        self._mention_rank = alert_format.severity_rank(cfg.mention_min_severity)
        self._mentions = "".join(f" @{m}" for m in cfg.at_mobiles)
        self._block_limit = cfg.max_message_bytes - HEADER_BYTES - len(self._mentions.encode())

    def encode(self, records: list[bytes]) -> list[Request]:
        items, bad = digest.items_of(records)
        return alert_format.invalid_requests(bad) + self._requests(items)

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        items = request.meta.get("items", [])
        return [r for half in digest.halves(items) for r in self._requests(half)]

    def _requests(self, items: list[Item]) -> list[Request]:
        blocks = {item.key: self.block(item) for item in items}
        sizes = {key: len(_ENCODE(text)) - 2 for key, text in blocks.items()}  # as escaped inside the JSON body
        groups = digest.pack(
            items,
            max_items=self.cfg.max_alerts_per_message,
            max_bytes=self.cfg.max_message_bytes,
            base_bytes=HEADER_BYTES + len(self._mentions.encode()),
            size_of=lambda item: sizes[item.key],
        )
        out = []
        for group in groups:
            body = self.body(group, [blocks[item.key] for item in group])
            out.append(Request(payload=body, indices=digest.indices(group), headers={"Content-Type": JSON}, raw_bytes=len(body), meta={"items": group}))
        return out

    def block(self, item: Item) -> str:
        """One alert's part of a digest, within the byte budget of one message."""
        alert = item.alert
        lines = [f"**{alert.severity.upper()} · {escape(alert.rule)}** · {escape(alert.time)}", "", escape(" ".join(alert.summary.split()))]
        for name, text in alert_format.display_fields(alert, limit=FIELD_CHARS):
            lines.append(f"- **{escape(name)}**: {escape(text)}")
        where = [f"node {escape(alert.node or self.node)}"] if alert.node or self.node else []
        if alert.cluster:
            where.append(f"cluster {escape(alert.cluster)}")
        where.append(f"id {escape(item.key)}")
        if alert.audit_ids:
            more = f" (+{len(alert.audit_ids) - 1})" if len(alert.audit_ids) > 1 else ""
            where.append(f"audit {escape(alert.audit_ids[0])}{more}")
        lines.append("- " + " · ".join(where))
        if alert.tags:
            lines.append(f"- tags: {escape(alert_format.display_value(', '.join(alert.tags), limit=FIELD_CHARS) or '')}")
        text = "\n".join(lines) + "\n"
        if len(_ENCODE(text)) - 2 > self._block_limit:
            text = digest.cut_utf8(text, self._block_limit // 2) + "\n"  # JSON escaping at most doubles a line's bytes
        return text

    def body(self, group: list[Item], blocks: list[str]) -> bytes:
        cfg = self.cfg
        n = len(group)
        heading = f"#### {escape(cfg.title)}: {n} alert{'s' if n != 1 else ''} ({digest.severity_counts(group)})\n\n"
        text = heading + "\n---\n\n".join(blocks)
        first = group[0].alert.rule
        title = digest.cut_utf8(f"{cfg.title}: {first}" + (f" (+{n - 1})" if n > 1 else ""), 120)
        body: dict[str, Any] = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
        if self._mention(group):
            text += "\n" + self._mentions.strip() if self._mentions else ""
            body["markdown"]["text"] = text
            body["at"] = {"atMobiles": list(cfg.at_mobiles), "atUserIds": list(cfg.at_user_ids), "isAtAll": cfg.at_all}
        return _ENCODE(body)

    def _mention(self, group: list[Item]) -> bool:
        cfg = self.cfg
        if not (cfg.at_mobiles or cfg.at_user_ids or cfg.at_all):
            return False
        return any(alert_format.severity_rank(item.alert.severity) <= self._mention_rank for item in group)

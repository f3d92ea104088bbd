"""Digests for chat targets (dingtalk, slack): a batch of alerts merged into as few messages as the backend's limits allow.

A chat robot takes a message a second (Slack) or 20 a minute (DingTalk), far fewer than an alert storm
raises, so each message carries many alerts: the batch's distinct alerts (one per alert id), the most severe
first (a stable sort: equal severities keep their order), packed in that order into messages of at most
`max_items` alerts and `max_bytes` bytes. What does not fit goes in the next message, never dropped; an
alert whose own text is over the limit is cut (its audit IDs point to the full events).

Each message's Request carries `meta["items"]`, so `classify` knows how many alerts it holds (a refused
digest of several is split until the refused alert is alone) and `split` can pack halves again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kube_audit_shipper.model import SEVERITIES, Alert
from kube_audit_shipper.sinks.alerts import format as alert_format


@dataclass(slots=True)
class Item:
    alert: Alert
    key: str
    positions: list[int]  # the batch records that carry this alert (one, or more for duplicates)


def items_of(records: Sequence[bytes]) -> tuple[list[Item], dict[int, str]]:
    """The batch's distinct alerts, most severe first; and the records that are no alert, with why."""
    good, bad = alert_format.decode_all(records)
    by_key: dict[str, Item] = {}
    for i, alert in good:
        key = alert_format.alert_key(alert)
        if key in by_key:
            by_key[key].positions.append(i)
        else:
            by_key[key] = Item(alert, key, [i])
    return sorted(by_key.values(), key=lambda item: alert_format.severity_rank(item.alert.severity)), bad


def pack(items: Sequence[Item], *, max_items: int, max_bytes: int, base_bytes: int, size_of: Callable[[Item], int]) -> list[list[Item]]:
    """Items in order into groups of at most `max_items` whose `base_bytes + sum(size_of)` stays within `max_bytes`
    (a single item over the limit still gets a group of its own: its renderer cuts it)."""
    groups: list[list[Item]] = []
    cur: list[Item] = []
    size = base_bytes
    for item in items:
        add = size_of(item)
        if cur and (len(cur) >= max_items or size + add > max_bytes):
            groups.append(cur)
            cur, size = [], base_bytes
        cur.append(item)
        size += add
    if cur:
        groups.append(cur)
    return groups


def halves(items: Sequence[Item]) -> list[list[Item]]:
    """A refused or too large digest in two (none for a single alert: the engine dead-letters it)."""
    if len(items) < 2:
        return []
    mid = len(items) // 2
    return [list(items[:mid]), list(items[mid:])]


def indices(items: Sequence[Item]) -> list[int]:
    return [i for item in items for i in item.positions]


def severity_counts(items: Sequence[Item]) -> str:
    """`2 critical, 1 high` (most severe first)."""
    counts = Counter(item.alert.severity for item in items)
    return ", ".join(f"{counts[s]} {s}" for s in SEVERITIES if counts[s])


def cut_utf8(text: str, max_bytes: int) -> str:
    """`text` in at most `max_bytes` UTF-8 bytes, cut on a character boundary with "…" when it was longer."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[: max(0, max_bytes - 3)].decode("utf-8", "ignore") + "…"

"""Alerts as Alertmanager alerts (labels, annotations, startsAt, endsAt), and batches as `POST /api/v2/alerts` bodies.

`AlertShaper` is shared with the webhook target, whose body carries the same alerts. `endsAt` is stamped when a
request is sent, not when it is encoded (`stamp`): endsAt = max(startsAt, now) + resolve_after_s. An alert
sent late (a backlog read after a restart, hours of retries while Alertmanager was down) still arrives active,
so Alertmanager notifies it; an alert whose endsAt had passed would be stored as resolved and never notified.

Alertmanager deduplicates on the label set, so the same detection sent twice (after a crash, or by a
split) updates one alert; `alert_id` keeps two detections of one rule apart. Within a batch, records with
the same alert id are sent once (the request stands for all of them).

Values are made valid for Alertmanager before sending (UTF-8, non-empty), so a 400 is not expected; when it
comes anyway the target splits the request until the refused alert is alone (replies.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec

from kube_audit_shipper.delivery.contract import Request, split_in_half
from kube_audit_shipper.model import Alert
from kube_audit_shipper.sinks.alertmanager.config import AlertmanagerTargetConfig, AlertShapeBase
from kube_audit_shipper.sinks.alerts import format as alert_format

_ENCODE = msgspec.json.Encoder().encode
JSON = "application/json"
_ENDS_AT_BYTES = len(b',"endsAt":"2006-01-02T15:04:05.999999999Z"')
MAX_LABEL_VALUE_CHARS = 1024
MAX_ANNOTATION_CHARS = 8192


def clean(text: str, limit: int) -> str:
    """Valid UTF-8 (lone surrogates replaced), at most `limit` characters."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's alert fingerprint: FNV-1a 64 over the sorted label names and values, each followed by 0xff."""
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name.encode(), b"\xff", labels[name].encode(), b"\xff"):
            for byte in part:
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def label_set_string(labels: dict[str, str]) -> str:
    """A label set as Prometheus prints it (`{a="x", b="y"}`: sorted, values quoted), e.g. in a webhook groupKey."""
    return "{" + ", ".join(f"{k}={_ENCODE(labels[k]).decode()}" for k in sorted(labels)) + "}"


@dataclass(slots=True)
class Shaped:
    """One alert as Alertmanager's, without endsAt (stamped at send time)."""

    key: str
    body: dict[str, Any]  # labels, annotations, startsAt, generatorURL?
    starts_ns: int


class AlertShaper:
    def __init__(self, cfg: AlertShapeBase, *, node: str) -> None:
        self.cfg = cfg
        self.node = node
        self.resolve_after_ns = cfg.resolve_after_s * 1_000_000_000

    def shape(self, alert: Alert, now_ns: int) -> Shaped:
        cfg = self.cfg
        key = alert_format.alert_key(alert)
        node = alert.node or self.node
        cluster = alert.cluster or cfg.cluster
        labels = {"alertname": alert.rule, "severity": alert.severity, "alert_id": key, **cfg.labels}
        optional = {"cluster": cluster, "node": node, "group": alert.group}
        for name in cfg.label_fields:
            optional[name] = alert_format.display_value(alert.fields.get(name), limit=MAX_LABEL_VALUE_CHARS)
        labels.update({k: v for k, v in optional.items() if v})
        labels = {k: clean(v, MAX_LABEL_VALUE_CHARS) for k, v in labels.items() if v}
        annotations = {"summary": alert.summary, "description": alert_format.description(alert), **cfg.annotations}
        annotations = {k: clean(v, MAX_ANNOTATION_CHARS) for k, v in annotations.items() if v}
        starts_ns = alert_format.parse_time_ns(alert.time)
        if starts_ns is None:  # a detection with a broken time is still a detection: it started no later than now
            starts_ns = now_ns
        body: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": alert_format.format_time_ns(starts_ns)}
        if cfg.generator_url is not None:
            values = {"rule": alert.rule, "id": key, "audit_id": alert.audit_ids[0] if alert.audit_ids else "", "group": alert.group or ""}
            values.update(node=node, cluster=cluster or "")
            body["generatorURL"] = cfg.generator_url.format_map({k: quote(v, safe="") for k, v in values.items()})
        return Shaped(key, body, starts_ns)

    def ends_at(self, starts_ns: int, now_ns: int) -> str:
        return alert_format.format_time_ns(max(starts_ns, now_ns) + self.resolve_after_ns)

    def unique(self, records: list[bytes], now_ns: int) -> tuple[list[tuple[Shaped, list[int]]], dict[int, str]]:
        """Each distinct alert of the batch once, with the positions of the records that carry it; and the records that are no alert."""
        good, bad = alert_format.decode_all(records)
        by_key: dict[str, tuple[Shaped, list[int]]] = {}
        for i, alert in good:
            key = alert_format.alert_key(alert)
            if key in by_key:
                by_key[key][1].append(i)
            else:
                by_key[key] = (self.shape(alert, now_ns), [i])
        return list(by_key.values()), bad


class AlertmanagerEncoder:
    def __init__(self, cfg: AlertmanagerTargetConfig, *, node: str) -> None:
        self.shaper = AlertShaper(cfg, node=node)
        self.max_alerts = cfg.max_alerts_per_request
        self.max_bytes = cfg.max_request_bytes

    def encode(self, records: list[bytes]) -> list[Request]:
        now_ns = time.time_ns()
        alerts, bad = self.shaper.unique(records, now_ns)
        requests = alert_format.invalid_requests(bad)
        cur: list[tuple[Shaped, list[int]]] = []
        size = 2
        for shaped, positions in alerts:
            add = len(_ENCODE(shaped.body)) + _ENDS_AT_BYTES + 1
            if cur and (len(cur) >= self.max_alerts or size + add > self.max_bytes):
                requests.append(self._request(cur, now_ns))
                cur, size = [], 2
            cur.append((shaped, positions))
            size += add
        if cur:
            requests.append(self._request(cur, now_ns))
        return requests

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        if alert_format.INVALID in request.meta or len(request.meta["alerts"]) < 2:
            return []
        halves = split_in_half(Request(b"", list(range(len(request.meta["alerts"])))))
        assert halves is not None
        out = []
        for half in halves:
            part = [(request.meta["alerts"][k], request.meta["positions"][k]) for k in half]
            out.append(self._request(part, time.time_ns()))
        return out

    def stamp(self, request: Request, now_ns: int) -> bytes:
        """The request's body with every endsAt computed for `now_ns` (called at each attempt)."""
        shaper = self.shaper
        return _ENCODE([{**s.body, "endsAt": shaper.ends_at(s.starts_ns, now_ns)} for s in request.meta["alerts"]])

    def _request(self, part: list[tuple[Shaped, list[int]]], now_ns: int) -> Request:
        request = Request(
            payload=b"",
            indices=[i for _, positions in part for i in positions],
            headers={"Content-Type": JSON},
            meta={"alerts": [s for s, _ in part], "positions": [p for _, p in part]},
        )
        request.payload = self.stamp(request, now_ns)
        request.raw_bytes = len(request.payload)
        return request

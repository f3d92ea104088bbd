"""Batches of alerts as Alertmanager webhook messages (version 4), so receivers written for Alertmanager work as they are.

    {"version": "4", "groupKey": "{}:{alertname=\"exec-into-container\"}", "truncatedAlerts": 0,
     "status": "firing", "receiver": "...", "groupLabels": {...}, "commonLabels": {...},
     "commonAnnotations": {...}, "externalURL": "...",
     "alerts": [{"status": "firing", "labels": {...}, "annotations": {...}, "startsAt": "...",
                 "endsAt": "...", "generatorURL": "...", "fingerprint": "<16 hex>"}]}

As Alertmanager builds it: groupLabels are the `group_by` labels of the group (absent ones left out),
groupKey is `{}:` and the group labels as Prometheus prints a label set (the `{}` stands for the root
route), commonLabels and commonAnnotations the pairs every alert of the message has, fingerprint
Alertmanager's hash of the labels, generatorURL "" when there is none. Every alert is firing: endsAt is
stamped at send time in the future (alertmanager/encode.py). A group larger than
`max_alerts_per_message` goes out in several messages, never truncated (truncatedAlerts is 0).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from kube_audit_shipper.delivery.contract import Request, split_in_half
from kube_audit_shipper.sinks.alertmanager.encode import AlertShaper, Shaped, fingerprint, label_set_string
from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.webhook.config import WebhookTargetConfig

_ENCODE = msgspec.json.Encoder().encode
JSON = "application/json"
_ALERT_OVERHEAD = len(b',{"status":"firing","endsAt":"2006-01-02T15:04:05.999999999Z","generatorURL":"","fingerprint":"0123456789abcdef"}')


class WebhookEncoder:
    def __init__(self, cfg: WebhookTargetConfig, *, node: str) -> None:
        self.cfg = cfg
        self.shaper = AlertShaper(cfg, node=node)

    def encode(self, records: list[bytes]) -> list[Request]:
        now_ns = time.time_ns()
        alerts, bad = self.shaper.unique(records, now_ns)
        requests = alert_format.invalid_requests(bad)
        groups: dict[tuple[tuple[str, str], ...], list[tuple[Shaped, list[int]]]] = {}
        for shaped, positions in alerts:
            labels = shaped.body["labels"]
            key = tuple((name, labels[name]) for name in self.cfg.group_by if name in labels)
            groups.setdefault(key, []).append((shaped, positions))
        for key, members in groups.items():
            requests.extend(self._pack(dict(key), members, now_ns))
        return requests

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        if alert_format.INVALID in request.meta or len(request.meta["alerts"]) < 2:
            return []
        halves = split_in_half(Request(b"", list(range(len(request.meta["alerts"])))))
        assert halves is not None
        now_ns = time.time_ns()
        return [self._request(request.meta["group"], [(request.meta["alerts"][k], request.meta["positions"][k]) for k in half], now_ns) for half in halves]

    def stamp(self, request: Request, now_ns: int) -> bytes:
        """The message with every endsAt computed for `now_ns` (called at each attempt)."""
        alerts = request.meta["alerts"]
        cfg = self.cfg
        common_labels = _common([s.body["labels"] for s in alerts])
        common_annotations = _common([s.body["annotations"] for s in alerts])
        body: dict[str, Any] = {
            "receiver": cfg.receiver,
            "status": "firing",
            "alerts": [
                {
                    "status": "firing",
                    "labels": s.body["labels"],
                    "annotations": s.body["annotations"],
                    "startsAt": s.body["startsAt"],
                    "endsAt": self.shaper.ends_at(s.starts_ns, now_ns),
                    "generatorURL": s.body.get("generatorURL", ""),
                    "fingerprint": fp,
                }
                for s, fp in zip(alerts, request.meta["fingerprints"], strict=True)
            ],
            "groupLabels": request.meta["group"],
            "commonLabels": common_labels,
            "commonAnnotations": common_annotations,
            "externalURL": cfg.external_url,
            "version": "4",
            "groupKey": "{}:" + label_set_string(request.meta["group"]),
            "truncatedAlerts": 0,
        }
        return _ENCODE(body)

    def _pack(self, group: dict[str, str], members: list[tuple[Shaped, list[int]]], now_ns: int) -> list[Request]:
        out: list[Request] = []
        cur: list[tuple[Shaped, list[int]]] = []
        base = 512 + 2 * len(_ENCODE(group)) + len(self.cfg.receiver) + len(self.cfg.external_url)
        size = base
        for shaped, positions in members:
            # an alert counts twice: common labels and annotations may repeat all of it
            add = 2 * len(_ENCODE(shaped.body)) + _ALERT_OVERHEAD
            if cur and (len(cur) >= self.cfg.max_alerts_per_message or size + add > self.cfg.max_request_bytes):
                out.append(self._request(group, cur, now_ns))
                cur, size = [], base
            cur.append((shaped, positions))
            size += add
        if cur:
            out.append(self._request(group, cur, now_ns))
        return out

    def _request(self, group: dict[str, str], part: list[tuple[Shaped, list[int]]], now_ns: int) -> Request:
        request = Request(
            payload=b"",
            indices=[i for _, positions in part for i in positions],
            headers={"Content-Type": JSON},
            meta={
                "group": group,
                "alerts": [s for s, _ in part],
                "positions": [p for _, p in part],
                "fingerprints": [fingerprint(s.body["labels"]) for s, _ in part],
            },
        )
        request.payload = self.stamp(request, now_ns)
        request.raw_bytes = len(request.payload)
        return request


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    """The pairs every map has (Alertmanager's commonLabels / commonAnnotations)."""
    if not maps:
        return {}
    first, rest = maps[0], maps[1:]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}

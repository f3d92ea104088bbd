"""Stream label sets: fixed labels, the node, and the values of `label_fields` taken from each event.

A stream is identified by the tuple of its field values (None: the event has no such field, and the label is
left out). Its label set is formatted once, in both forms Loki reads: the protobuf `labels` string
(`{job="kube-audit", verb="get"}`, values quoted with JSON escapes, which Loki's Go string parser accepts)
and the JSON `stream` object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from kube_audit_shipper.sinks.loki import push_pb
from kube_audit_shipper.sinks.loki.config import MAX_LABEL_VALUE_BYTES
from kube_audit_shipper.sinks.loki.fields import label_value, truncate_utf8

_ENCODE = msgspec.json.Encoder().encode
_MAX_CACHED_STREAMS = 10_000


@dataclass(slots=True)
class Stream:
    labels: dict[str, str]
    text: str  # Prometheus-style label set, as in Loki's messages (without the service_name Loki adds)
    pb_labels: bytes  # StreamAdapter field 1
    json_labels: bytes  # the JSON `stream` object
    key: frozenset[tuple[str, str]] = field(default_factory=frozenset)


class StreamTable:
    """Label values tuple -> Stream, formatted once per distinct stream."""

    def __init__(self, fixed: dict[str, str], names: list[str]) -> None:
        self.fixed = dict(fixed)
        self.names = names
        self._streams: dict[tuple[str | None, ...], Stream] = {}

    def values(self, raw: list[object]) -> tuple[str | None, ...]:
        out = []
        for value in raw:
            text = label_value(value)
            out.append(None if text is None else truncate_utf8(text, MAX_LABEL_VALUE_BYTES))
        return tuple(out)

    def stream(self, values: tuple[str | None, ...]) -> Stream:
        stream = self._streams.get(values)
        if stream is None:
            if len(self._streams) >= _MAX_CACHED_STREAMS:  # values went wild (forced labels): start over
                self._streams.clear()
            labels = dict(self.fixed)
            labels.update((name, value) for name, value in zip(self.names, values, strict=True) if value)
            stream = self._streams[values] = make_stream(labels)
        return stream


def make_stream(labels: dict[str, str]) -> Stream:
    ordered = sorted(labels.items())
    text = "{" + ", ".join(f"{name}={_ENCODE(value).decode()}" for name, value in ordered) + "}"
    return Stream(
        labels=dict(ordered),
        text=text,
        pb_labels=push_pb.labels_field(text),
        json_labels=_ENCODE(dict(ordered)),
        key=frozenset(ordered),
    )

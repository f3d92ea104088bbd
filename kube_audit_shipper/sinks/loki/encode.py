"""Batch of events -> Loki push requests: streams, entries in timestamp order, requests of bounded size.

Per record (the hot path): the line is the record itself (an event over `max_line_bytes` is first trimmed,
see event.fit_line); one typed decode gives the label and structured-metadata fields and the timestamp; the
entry is encoded at once (protobuf pieces, or one JSON array) and its exact size is known.

Then the batch is ordered by (timestamp, position): a stable sort, so entries with equal timestamps keep
their order. Requests are filled in that order up to `max_request_bytes` (uncompressed), each entry going
into its stream's group of the current request. So within a request every stream's entries are in
timestamp order, and every entry of a stream in one request is no later than those of the next request:
sent one after the other (the sink's max_concurrency is 1), a stream reaches Loki in order, across
requests, batches and retries alike.

Within a request the streams go smallest first: Loki's ingester reports only the last stream's error (a
stream refused by the per-stream rate limit, or too far behind, is dropped silently when another follows it),
so the stream most likely to be refused is the one whose refusal comes back.

`Request.indices` lists the request's records in that order; `Request.meta` keeps what `classify` needs to
map Loki's messages back to records: the streams with their entries' positions in `indices`, and per
entry the timestamp, line length and structured-metadata size and count.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from typing import Any

import cramjam
import msgspec

from kube_audit_shipper.delivery.contract import Request, split_in_half
from kube_audit_shipper.sinks.loki import push_pb
from kube_audit_shipper.sinks.loki.config import MAX_LABEL_VALUE_BYTES, LokiSinkConfig
from kube_audit_shipper.sinks.loki.event import FieldReader, fit_line
from kube_audit_shipper.sinks.loki.fields import FIELDS, label_value, truncate_utf8
from kube_audit_shipper.sinks.loki.labels import Stream, StreamTable

_ENCODE = msgspec.json.Encoder().encode
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_METADATA_VALUE_BYTES = 2048  # 20 fields of this stay far below Loki's 64 KiB per entry
_PB_STREAM_OVERHEAD = 6  # key and length of a StreamAdapter
_JSON_STREAM_OVERHEAD = len(b'{"stream":,"values":[]},')
_JSON_REQUEST_OVERHEAD = len(b'{"streams":[]}')


@dataclass(slots=True)
class _Prepared:
    """Every record of one encode call, encoded as an entry."""

    streams: list[Stream] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    parts: list[tuple[bytes, ...]] = field(default_factory=list)  # protobuf: head, line, metadata; json: the value array
    sizes: list[int] = field(default_factory=list)  # bytes the entry adds to a request
    line_len: list[int] = field(default_factory=list)
    sm_bytes: list[int] = field(default_factory=list)
    sm_count: list[int] = field(default_factory=list)
    trimmed: int = 0


class PushEncoder:
    def __init__(self, cfg: LokiSinkConfig, *, node: str) -> None:
        fixed = dict(cfg.labels)
        if cfg.node_label and node:
            fixed[cfg.node_label] = truncate_utf8(node, MAX_LABEL_VALUE_BYTES)
        self._reader = FieldReader([FIELDS[n].path for n in cfg.label_fields] + [FIELDS[n].path for n in cfg.structured_metadata])
        self._nlabels = len(cfg.label_fields)
        self._table = StreamTable(fixed, list(cfg.label_fields))
        self._sm_names = list(cfg.structured_metadata)
        self._sm_pb = [push_pb.metadata_name(n) for n in self._sm_names]
        self._protobuf = cfg.encoding == "protobuf"
        self._gzip = not self._protobuf and cfg.json_compression == "gzip"
        self.max_request_bytes = cfg.max_request_bytes
        self.max_line_bytes = cfg.max_line_bytes
        self.trimmed_events = 0  # events cut to Metadata level to fit max_line_bytes (read by tests and metrics)

    # -- contract ------------------------------------------------------------------------------------
    def encode(self, records: list[bytes]) -> list[Request]:
        prepared = self._prepare(records)
        order = sorted(range(len(records)), key=prepared.ts.__getitem__)
        return self._pack(prepared, order)

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        halves = split_in_half(request)
        if halves is None:
            return []
        out = []
        for half in halves:
            subset = [records[i] for i in half]
            prepared = self._prepare(subset)
            for req in self._pack(prepared, sorted(range(len(subset)), key=prepared.ts.__getitem__)):
                req.indices = [half[k] for k in req.indices]
                out.append(req)
        return out

    # -- records -> entries --------------------------------------------------------------------------
    def _prepare(self, records: list[bytes]) -> _Prepared:
        p = _Prepared()
        read, table, nlabels, sm_names, sm_pb = self._reader.read, self._table, self._nlabels, self._sm_names, self._sm_pb
        limit = self.max_line_bytes
        for record in records:
            line = record
            if len(line) > limit:
                line = fit_line(record, limit)
                p.trimmed += 1
            fields, ts = read(line)
            stream = table.stream(table.values(fields[:nlabels]) if nlabels else ())
            pairs: list[tuple[int, str]] = []
            sm_size = 0
            for j in range(len(sm_names)):
                value = label_value(fields[nlabels + j])
                if value is not None:
                    value = truncate_utf8(value, MAX_METADATA_VALUE_BYTES)
                    pairs.append((j, value))
                    sm_size += len(sm_names[j]) + len(value.encode())
            if self._protobuf:
                metadata = push_pb.metadata([(sm_pb[j], v) for j, v in pairs]) if pairs else b""
                head, size = push_pb.entry_head(ts, len(line), len(metadata))
                p.parts.append((head, line, metadata))
            else:
                entry = b'["' + str(ts).encode() + b'",' + _ENCODE(line.decode())
                if pairs:
                    entry += b"," + _ENCODE({sm_names[j]: v for j, v in pairs})
                entry += b"]"
                size = len(entry) + 1
                p.parts.append((entry,))
            p.streams.append(stream)
            p.ts.append(ts)
            p.sizes.append(size)
            p.line_len.append(len(line))
            p.sm_bytes.append(sm_size)
            p.sm_count.append(len(pairs))
        self.trimmed_events += p.trimmed
        return p

    # -- entries -> requests -------------------------------------------------------------------------
    def _pack(self, p: _Prepared, order: list[int]) -> list[Request]:
        requests: list[Request] = []
        overhead = _PB_STREAM_OVERHEAD if self._protobuf else _JSON_STREAM_OVERHEAD
        base = 0 if self._protobuf else _JSON_REQUEST_OVERHEAD
        cur: list[int] = []
        groups: dict[str, list[int]] = {}
        size = base
        for i in order:
            stream = p.streams[i]
            add = p.sizes[i]
            if stream.text not in groups:
                add += overhead + (len(stream.pb_labels) if self._protobuf else len(stream.json_labels))
            if cur and size + add > self.max_request_bytes:
                requests.append(self._request(p, cur, groups))
                cur, groups, size = [], {}, base
                add = p.sizes[i] + overhead + (len(stream.pb_labels) if self._protobuf else len(stream.json_labels))
            groups.setdefault(stream.text, []).append(len(cur))
            cur.append(i)
            size += add
        if cur:
            requests.append(self._request(p, cur, groups))
        return requests

    def _request(self, p: _Prepared, cur: list[int], groups: dict[str, list[int]]) -> Request:
        streams: list[tuple[Stream, list[int]]] = [(p.streams[cur[pos[0]]], pos) for pos in groups.values()]
        # Loki's ingester answers with the error of the request's *last* stream only: the biggest stream, the one
        # most likely to meet the per-stream rate limit, goes last so that its refusal is the one that comes back.
        streams.sort(key=lambda sp: sum(p.sizes[cur[k]] for k in sp[1]))
        if self._protobuf:
            parts: list[bytes] = []
            for stream, positions in streams:
                parts.append(push_pb.stream_head(stream.pb_labels, sum(p.sizes[cur[k]] for k in positions)))
                for k in positions:
                    parts.extend(p.parts[cur[k]])
            raw = b"".join(parts)
            payload = bytes(cramjam.snappy.compress_raw(raw))
            headers = {"Content-Type": PROTOBUF}
        else:
            body = [b'{"streams":[']
            for n, (stream, positions) in enumerate(streams):
                body.append(b'{"stream":' if n == 0 else b',{"stream":')
                body.append(stream.json_labels)
                body.append(b',"values":[')
                body.append(b",".join(p.parts[cur[k]][0] for k in positions))
                body.append(b"]}")
            body.append(b"]}")
            raw = b"".join(body)
            payload = gzip.compress(raw, compresslevel=6, mtime=0) if self._gzip else raw
            headers = {"Content-Type": JSON, **({"Content-Encoding": "gzip"} if self._gzip else {})}
        meta: dict[str, Any] = {
            "streams": streams,
            "ts": [p.ts[i] for i in cur],
            "line_len": [p.line_len[i] for i in cur],
            "sm_bytes": [p.sm_bytes[i] for i in cur],
            "sm_count": [p.sm_count[i] for i in cur],
        }
        return Request(payload=payload, indices=cur, headers=headers, raw_bytes=len(raw), meta=meta)

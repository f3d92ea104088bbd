"""What Loki's answer to a push means: the sink's `classify`, and Loki's error texts read back into records.

    204/2xx                  Delivered
    400, per-entry messages  Rejected(those records, retry_rest=False): Loki stored the other streams and entries
                             of the request (partial success), so they must not be sent again
    400 couldn't parse labels  Rejected(all): Loki refused the whole request for one stream it cannot name
    400 request not readable Blocked (snappy/EOF/mime/JSON/proto: the body is wrong for this server; keep the data)
    400 structured metadata disallowed  Blocked: every entry would be refused; set structured_metadata: []
    429 tenant rate limit    Retry; Split when the request is over one second of the limit (it may be over the burst,
                             which Loki answers 429 for ever)
    429 per-stream limit     Retry (Loki stored the other streams; re-sent, they are exact duplicates Loki drops);
                             Split when that stream's part of the request is over one second of its limit
    413; 500 "received message larger than max"  Split
    5xx, 408, transport errors  Retry, with the Retry-After a proxy may send (Loki sends none)
    401/403/404/405/501, other 4xx, TLS, unreadable credentials  Blocked

Every reason starts with a short code (`too_old: ...`), for logs and metrics.

Loki's 400 texts name the stream as Prometheus prints a label set (sorted, Go-quoted values, `service_name`
added) and the entry by what was wrong: the timestamp's second (too old / too new), the line length, or the
exact timestamp (`entry with timestamp ... ignored`, at most 10 listed, then `total ignored: N out of M`).
The distributor groups repeated messages (`3 errors like: ...`, joined by `; `). Each message is matched to
the request's entries of that stream; what cannot be matched rejects the whole request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kube_audit_shipper.delivery.answers import retry_after
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Rejected, Reply, Request, Retry, Split
from kube_audit_shipper.sinks.http.client import short as _short
from kube_audit_shipper.sinks.http.client import transport_outcome
from kube_audit_shipper.sinks.loki.event import parse_ns

_STREAM = r"'(?P<stream>\{+.*?\}+)'"
_ENTRY_MESSAGES: list[tuple[str, re.Pattern[str]]] = [
    (
        "too_old",
        re.compile(rf"entry for stream {_STREAM} has timestamp too old: (?P<ts>[0-9TZ:+.\-]+), oldest acceptable timestamp is: (?P<cut>[0-9TZ:+.\-]+)"),
    ),
    ("too_new", re.compile(rf"entry for stream {_STREAM} has timestamp too new: (?P<ts>[0-9TZ:+.\-]+)")),
    (
        "line_too_long",
        re.compile(rf"(?i:max entry size) '(?P<limit>\d+)' bytes exceeded for stream {_STREAM} while adding an entry with length '(?P<len>\d+)' bytes"),
    ),
    ("too_many_labels", re.compile(rf"entry for stream {_STREAM} has (?P<n>\d+) label names; limit (?P<limit>\d+)")),
    ("label_name_too_long", re.compile(rf"stream {_STREAM} has label name too long: ")),
    ("label_value_too_long", re.compile(rf"stream {_STREAM} has label value too long: ")),
    ("duplicate_label_names", re.compile(rf"stream {_STREAM} has duplicate label name: ")),
    ("structured_metadata_too_large", re.compile(rf"stream {_STREAM} has structured metadata too large: '(?P<size>\d+)' bytes, limit: '(?P<limit>\d+)' bytes")),
    ("structured_metadata_too_many", re.compile(rf"stream {_STREAM} has too many structured metadata labels: '(?P<n>\d+)', limit: '(?P<limit>\d+)'")),
    ("missing_enforced_labels", re.compile(rf"(?i:missing enforced labels).*?for stream {_STREAM}")),
]
_GROUP_START = re.compile(r"(?:^|; )(?:(?P<count>\d+) errors like: )?(?=entry for stream '|(?i:max entry size) '|stream '|missing enforced labels)")
_IGNORED = re.compile(r"entry with timestamp (?P<ts>[^\n]+?) ignored, reason: '(?P<reason>.*?)',\n")
_TOTAL = re.compile(r"total ignored: (?P<n>\d+) out of (?P<of>\d+) for stream: (?P<stream>\{.*\})\s*$", re.DOTALL)
_GO_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?) ([+-])(\d{2})(\d{2})")
_RATE = re.compile(r"(?i:ingestion rate limit exceeded) for user \S+ \(limit: (?P<limit>\d+) bytes/sec\).*?totaling '(?P<bytes>\d+)' bytes")
_STREAM_RATE = re.compile(r"Per stream rate limit exceeded \(limit: (?P<limit>[0-9.]+[KMGTP]?B)/sec\)")
_TOO_LARGE = ("received message larger than max", "ResourceExhausted", "message too large")
_UNREADABLE = ("snappy:", "mime:", "EOF", "proto:", "loghttp.", "unmarshalerDecoder", "strconv.", "Content-Encoding", "gzip:", "flate:")
_LABEL_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_GO_ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|[abfnrtv\\"\'])')
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"', "'": "'"}
_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "PB": 1 << 50}


def classify(request: Request, result: Reply | BaseException) -> Outcome:
    if isinstance(result, BaseException):
        return transport_outcome(result)
    status = result.status
    text = result.body.decode("utf-8", "replace").strip()
    short = _short(text)
    after = retry_after(result.headers)
    if 200 <= status < 300:
        return Delivered()
    if status == 400:
        return _bad_request(request, text)
    if status == 429:
        return _rate_limited(request, text, after)
    if status == 413 or (status == 500 and any(s in text for s in _TOO_LARGE)):
        return Split(f"request_too_large: HTTP {status}: {short}")
    if (status >= 500 and status != 501) or status == 408:
        return Retry(f"{'server_error' if status == 500 else 'unavailable'}: HTTP {status}: {short}", after)
    if status in (401, 407):
        return Blocked(f"unauthorized: HTTP {status}: {short} (check basic_auth, bearer_token or tenant_id)")
    if status == 403:
        return Blocked(f"forbidden: HTTP 403: {short}")
    if status in (404, 405):
        return Blocked(f"not_found: HTTP {status} from the push endpoint: {short} (check url)")
    return Blocked(f"http_{status}: {short}")


def reason_code(reason: str) -> str:
    """The machine code a reason starts with (`too_old: ...` -> `too_old`)."""
    return reason.split(":", 1)[0]


def _rate_limited(request: Request, text: str, after: float | None) -> Outcome:
    short = _short(text)
    m = _RATE.search(text)
    if m is not None:
        if int(m["bytes"]) > int(m["limit"]) and len(request.indices) > 1:
            return Split(f"request_too_large: {short}")
        return Retry(f"rate_limited: {short}", after)
    m = _STREAM_RATE.search(text)
    if m is not None:
        total = _TOTAL.search(text)
        streams = _streams(request)
        pos = _positions(total["stream"], streams) if total else None
        limit = _datasize(m["limit"])
        if pos is not None and limit is not None and len(request.indices) > 1:
            meta = request.meta
            if sum(meta["line_len"][k] + meta["sm_bytes"][k] for k in pos) > limit:
                return Split(f"request_too_large: {short}")
        return Retry(f"stream_rate_limited: {short}", after)
    return Retry(f"rate_limited: HTTP 429: {short}", after)


# -- 400 -------------------------------------------------------------------------------------------------
@dataclass
class _Match:
    positions: list[int]  # into request.indices
    code: str
    message: str


def _bad_request(request: Request, text: str) -> Outcome:
    short = _short(text)
    if text.startswith(("couldn't parse labels", "Error parsing labels")):
        return Rejected(f"invalid_labels: {short}", list(request.indices))
    if "structured metadata, but this feature is disallowed" in text:
        return Blocked(f"structured_metadata_disallowed: {short} (set structured_metadata: [] for this Loki)")
    if any(text.startswith(s) for s in _UNREADABLE) or not text:
        return Blocked(f"bad_request: the push body was not readable by this server: {short}")
    matches = _ingester_matches(request, text) if _TOTAL.search(text) else _distributor_matches(request, text)
    if not matches:
        return Rejected(f"bad_request: {short}", list(request.indices))
    taken: dict[int, str] = {}
    for match in matches:
        for k in match.positions:
            taken.setdefault(k, f"{match.code}: {_short(match.message)}")
    indices = list(request.indices)
    reasons = {indices[k]: why for k, why in taken.items()}
    first = matches[0]
    more = f" (and {len(taken) - len(first.positions)} more entries)" if len(taken) > len(first.positions) else ""
    return Rejected(f"{first.code}: {_short(first.message)}{more}", [indices[k] for k in sorted(taken)], retry_rest=False, reasons=reasons)


def _distributor_matches(request: Request, text: str) -> list[_Match] | None:
    starts = list(_GROUP_START.finditer(text))
    if not starts or starts[0].start() != 0:
        return None
    streams = _streams(request)
    taken: set[int] = set()
    out = []
    for n, start in enumerate(starts):
        message = text[start.end() : starts[n + 1].start() if n + 1 < len(starts) else len(text)]
        count = int(start["count"] or 1)
        found = next(((code, m) for code, rx in _ENTRY_MESSAGES if (m := rx.match(message))), None)
        if found is None:
            return None
        code, m = found
        positions = _positions(m["stream"], streams)
        if positions is None:
            return None
        chosen = _entries_for(request, code, m, [k for k in positions if k not in taken], count)
        if not chosen:
            return None
        taken.update(chosen)
        out.append(_Match(chosen, code, message))
    return out


def _entries_for(request: Request, code: str, m: re.Match[str], positions: list[int], count: int) -> list[int]:
    meta = request.meta
    ts = meta["ts"]
    if code in ("too_old", "too_new"):
        second = parse_ns(m["ts"])
        if second is None:
            return []
        second //= 1_000_000_000
        same = [k for k in positions if ts[k] // 1_000_000_000 == second]
        same.sort(key=ts.__getitem__, reverse=code == "too_new")
        return same[:count]
    if code == "line_too_long":
        return [k for k in positions if meta["line_len"][k] == int(m["len"])][:count]
    if code == "structured_metadata_too_large":
        return [k for k in positions if meta["sm_bytes"][k] > int(m["limit"])][:count]
    if code == "structured_metadata_too_many":
        return [k for k in positions if meta["sm_count"][k] > int(m["limit"])][:count]
    return positions  # a label problem: the whole stream


def _ingester_matches(request: Request, text: str) -> list[_Match] | None:
    total = _TOTAL.search(text)
    assert total is not None
    streams = _streams(request)
    positions = _positions(total["stream"], streams)
    if positions is None:
        return None
    ts = request.meta["ts"]
    left = sorted(positions, key=ts.__getitem__)
    out: list[_Match] = []
    listed = list(_IGNORED.finditer(text))
    for m in listed:
        ns = _go_time_ns(m["ts"])
        k = next((k for k in left if ts[k] == ns), None)
        if k is None:
            return None
        left.remove(k)
        out.append(_Match([k], _entry_code(m["reason"]), f"entry with timestamp {m['ts']} ignored, reason: '{m['reason']}'"))
    missing = int(total["n"]) - len(listed)
    if missing > 0 and listed:  # at most 10 are listed: the others are the oldest left (entries go in order)
        reason = listed[-1]["reason"]
        out.append(_Match(left[:missing], _entry_code(reason), f"{reason} ({missing} entries not listed by Loki)"))
    return out or None


def _entry_code(reason: str) -> str:
    if reason.startswith("entry too far behind") or "out of order" in reason:
        return "too_far_behind"
    return "rejected_entry"


# -- label sets in Loki's messages ------------------------------------------------------------------------
def _streams(request: Request) -> dict[frozenset[tuple[str, str]], list[int]]:
    return {stream.key: positions for stream, positions in request.meta["streams"]}


def _positions(text: str, streams: dict[frozenset[tuple[str, str]], list[int]]) -> list[int] | None:
    key = _label_key(text, streams)
    return None if key is None else streams[key]


def _label_key(text: str, streams: Mapping[frozenset[tuple[str, str]], Any]) -> frozenset[tuple[str, str]] | None:
    """The label set Loki printed, as the key of one of the request's streams (Loki's service_name dropped)."""
    inner = text.strip().lstrip("{").rstrip("}")
    pairs, pos = [], 0
    while pos < len(inner):
        m = _LABEL_PAIR.match(inner, pos)
        if m is None:
            return None
        pairs.append((m[1], _GO_ESCAPE.sub(lambda e: _unescape(e[1]), m[2])))
        pos = m.end()
    key = frozenset(pairs)
    if key in streams:
        return key
    without = frozenset(p for p in pairs if p[0] != "service_name")
    return without if without in streams else None


def _unescape(esc: str) -> str:
    if esc in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[esc]
    if esc[0] in "xuU":
        return chr(int(esc[1:], 16))
    return chr(int(esc, 8))


def _go_time_ns(text: str) -> int | None:
    m = _GO_TIME.match(text)
    if m is None:
        return parse_ns(text)
    return parse_ns(f"{m[1]}T{m[2]}{m[3]}{m[4]}:{m[5]}")


def _datasize(text: str) -> int | None:
    m = re.fullmatch(r"([0-9.]+)([KMGTP]?B)", text)
    return int(float(m[1]) * _UNITS[m[2]]) if m else None

"""The few fields of an audit event the report reads, decoded in one pass; everything else is skipped.

`ReportEvent` names only what the report uses. msgspec skips the other fields and the bodies without building
them (the request body is kept as raw bytes, parsed only for the few Service and RBAC writes that need it),
which is what makes a gigabyte of logs a matter of seconds. Unknown fields are ignored, so the file sink's
enriched output (`derived`, `node`, static fields) decodes the same way.

A line that cannot be read as an event is classified, counted by the caller and skipped:
`invalid-json`, `too-deep` (nesting past the decoder's recursion limit), `not-an-event` (not an object, another
`kind`, or no `kind` and none of the fields every event has) and `odd-types` (a field the report reads holds another type,
e.g. a string where the user object belongs).

Timestamps: `stageTimestamp`, else `requestReceivedTimestamp`, else v1beta1's `timestamp`; read with
`process.enrich.timestamps.parse_timestamp` (every form it accepts), with the minute's epoch cached so that
kube-apiserver's own form costs a slice and a dict lookup.
"""

from __future__ import annotations

import msgspec
from msgspec import UNSET, Raw, UnsetType

from kube_audit_shipper.process.enrich.timestamps import parse_timestamp


class User(msgspec.Struct):
    username: str = ""
    groups: list[str] = []


class ObjectRef(msgspec.Struct):
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    apiGroup: str = ""
    apiVersion: str = ""


class ResponseStatus(msgspec.Struct):
    code: int = 0


class ReportEvent(msgspec.Struct):
    """An audit event as the report reads it (absent strings are "", absent objects UNSET)."""

    kind: str = ""
    level: str = ""
    auditID: str = ""
    stage: str = ""
    requestURI: str = ""
    verb: str = ""
    user: User | UnsetType = UNSET
    impersonatedUser: User | UnsetType = UNSET
    sourceIPs: list[str] = []
    userAgent: str = ""
    objectRef: ObjectRef | UnsetType = UNSET
    responseStatus: ResponseStatus | UnsetType = UNSET
    requestObject: Raw | UnsetType = UNSET
    annotations: Raw | UnsetType = UNSET
    requestReceivedTimestamp: str = ""
    stageTimestamp: str = ""
    timestamp: str = ""


INVALID_JSON = "invalid-json"
TOO_DEEP = "too-deep"
NOT_AN_EVENT = "not-an-event"
ODD_TYPES = "odd-types"
OVERSIZE = "oversize"
#: Every reason a line is skipped, in the order the report lists them.
SKIP_REASONS = (INVALID_JSON, TOO_DEEP, NOT_AN_EVENT, ODD_TYPES, OVERSIZE)

_DECODER = msgspec.json.Decoder(ReportEvent)
_ANNOTATIONS = msgspec.json.Decoder(dict[str, str])


def decode(line: bytes) -> ReportEvent | str:
    """The event of one line, or the reason it is skipped (one of `SKIP_REASONS`)."""
    try:
        event = _DECODER.decode(line)
    except msgspec.ValidationError as exc:
        # a field error names its path (`... - at `$.user``); no path: the value is not an object at all
        return ODD_TYPES if "at `$" in str(exc) else NOT_AN_EVENT
    except msgspec.DecodeError:
        return INVALID_JSON
    except RecursionError:
        return TOO_DEEP
    if event.kind:
        return event if event.kind == "Event" else NOT_AN_EVENT
    if not (event.verb or event.auditID or event.requestURI or event.stageTimestamp or event.requestReceivedTimestamp or event.timestamp):
        return NOT_AN_EVENT
    return event


def annotation_map(event: ReportEvent) -> dict[str, str]:
    """The event's annotations (string values only); {} when absent or of another shape."""
    raw = event.annotations
    if not raw:
        return {}
    try:
        return _ANNOTATIONS.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return {}


class Clock:
    """Event time in epoch seconds, with a cache of minute epochs for the common RFC 3339 `...Z` form."""

    __slots__ = ("_minutes",)

    _MAX_CACHED = 4096

    def __init__(self) -> None:
        self._minutes: dict[str, int] = {}

    def seconds(self, event: ReportEvent) -> float | None:
        text = event.stageTimestamp or event.requestReceivedTimestamp or event.timestamp
        if not text:
            return None
        return self.parse(text)

    def parse(self, text: str) -> float | None:
        """Epoch seconds of a timestamp string; None when unreadable."""
        if len(text) >= 20 and text[-1] == "Z" and text[10] == "T" and text[16] == ":":
            sec = text[17:-1]
            if sec.isascii() and sec[:2].isdigit() and sec[:2] < "60" and (len(sec) == 2 or (sec[2] == "." and sec[3:].isdigit())):
                minute = self._minutes.get(text[:16])
                if minute is None:
                    moment = parse_timestamp(text[:16] + ":00Z")
                    if moment is None:
                        return None
                    minute = int(moment.timestamp())
                    if len(self._minutes) < self._MAX_CACHED:
                        self._minutes[text[:16]] = minute
                return minute + float(sec)
        moment = parse_timestamp(text)
        return None if moment is None else moment.timestamp()

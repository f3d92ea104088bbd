"""One audit event line, decoded in a single pass, bodies kept raw.

`AuditEventWire` is the audit.k8s.io Event (v1, plus v1beta1's `metadata` and `timestamp`) with every field
typed exactly as kube-apiserver writes it, in its field order, except the bodies (`requestObject`,
`responseObject`), the v1beta1 `metadata` and the Status `metadata`/`details`, which stay `msgspec.Raw`: they are
never parsed unless a step asks, and re-encoding copies their bytes. Every nested struct forbids unknown fields,
so a line that decodes into it re-encodes to the same JSON value. Absent fields are `UNSET` (falsy) and stay
absent.

Any line that does not fit (an unknown field anywhere in the typed part, a value of another type, as in many
third-party and fixture events) is decoded as `dict[str, Raw]` instead: its output keeps every field, in the
original order, and its *view* (what the policy and enrichment read) is built field by field, leniently: a
value of an unexpected type (or a number out of range, or nested too deep) reads as absent, never as an error.

Nesting: msgspec recurses on nested arrays and objects, also to skip or keep a value raw, and stops at Python's
recursion limit (about 1,000 levels). kube-apiserver records deeper bodies (a user may create such an object),
so a line msgspec cannot decode for depth is split at its top level by `kube_audit_shipper.jsonscan`: an iterative scanner that
validates the whole line as strictly as msgspec (escapes, surrogate pairs, numbers, no trailing data) with an
explicit stack and never recurses, at a few MB/s (it only runs on such lines). The event keeps its head fields,
its policy decision and its bodies as recorded; a head field nested too deep reads as absent. `object_members`
and `array_items` give any step (trim, the sinks) the same depth-proof top-level view of a value.

`annotate` is how a step says on the event itself what it could not do (a body it could not parse): the note
goes to `annotations["kube-audit-shipper.io/body-not-parsed"]`, where it is shipped and queryable.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

from kube_audit_shipper.errors import MalformedEventError
from kube_audit_shipper.jsonscan import array_items, object_members

_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n"
_OPEN_BRACE = ord("{")


class UserInfo(msgspec.Struct, forbid_unknown_fields=True):
    username: str | UnsetType = UNSET
    uid: str | UnsetType = UNSET
    groups: list[str] | UnsetType = UNSET
    extra: dict[str, list[str]] | UnsetType = UNSET


class ObjectReference(msgspec.Struct, forbid_unknown_fields=True):
    resource: str | UnsetType = UNSET
    namespace: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    uid: str | UnsetType = UNSET
    apiGroup: str | UnsetType = UNSET
    apiVersion: str | UnsetType = UNSET
    resourceVersion: str | UnsetType = UNSET
    subresource: str | UnsetType = UNSET


class Status(msgspec.Struct, forbid_unknown_fields=True):
    kind: str | UnsetType = UNSET
    apiVersion: str | UnsetType = UNSET
    metadata: Raw | UnsetType = UNSET
    status: str | UnsetType = UNSET
    message: str | UnsetType = UNSET
    reason: str | UnsetType = UNSET
    details: Raw | UnsetType = UNSET
    code: int | UnsetType = UNSET


class AuditEventWire(msgspec.Struct, forbid_unknown_fields=True):
    """audit.k8s.io Event as kube-apiserver writes it; bodies raw."""

    kind: str | UnsetType = UNSET
    apiVersion: str | UnsetType = UNSET
    metadata: Raw | UnsetType = UNSET
    level: str | UnsetType = UNSET
    timestamp: str | UnsetType = UNSET
    auditID: str | UnsetType = UNSET
    stage: str | UnsetType = UNSET
    requestURI: str | UnsetType = UNSET
    verb: str | UnsetType = UNSET
    user: UserInfo | UnsetType = UNSET
    impersonatedUser: UserInfo | UnsetType = UNSET
    sourceIPs: list[str] | UnsetType = UNSET
    userAgent: str | UnsetType = UNSET
    objectRef: ObjectReference | UnsetType = UNSET
    responseStatus: Status | UnsetType = UNSET
    requestObject: Raw | UnsetType = UNSET
    responseObject: Raw | UnsetType = UNSET
    requestReceivedTimestamp: str | UnsetType = UNSET
    stageTimestamp: str | UnsetType = UNSET
    annotations: dict[str, str] | UnsetType = UNSET


#: The Event's top-level field names.
EVENT_FIELDS = frozenset(AuditEventWire.__struct_fields__)
_BODIES = frozenset({"requestObject", "responseObject", "metadata"})

#: Where a step notes on the event what it could not do with a body (shipped with the event).
BODY_NOTE_ANNOTATION = "kube-audit-shipper.io/body-not-parsed"
#: Top-level member holding that note when the event's `annotations` is not a JSON object.
NOTES_FIELD = "kube-audit-shipper.io/annotations"

_WIRE = msgspec.json.Decoder(AuditEventWire)
_TOP = msgspec.json.Decoder(dict[str, Raw])
_STR = msgspec.json.Decoder(str)
_INT = msgspec.json.Decoder(int)
_FIELD_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    field.name: msgspec.json.Decoder(field.type) for field in msgspec.structs.fields(AuditEventWire) if field.name not in _BODIES
}


def _text(raw: Raw | None) -> str | UnsetType:
    if raw is None:
        return UNSET
    try:
        return _STR.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return UNSET


def _texts(raw: Raw) -> list[str] | UnsetType:
    items = _items_or_none(raw)
    if items is None:
        return UNSET
    return [text for item in items if (text := _text(item)) is not UNSET]


def _members_or_none(raw: Raw) -> dict[str, Raw] | None:
    try:
        return object_members(raw)
    except msgspec.DecodeError:
        return None


def _items_or_none(raw: Raw) -> list[Raw] | None:
    try:
        return array_items(raw)
    except msgspec.DecodeError:
        return None


def _lenient_value(name: str, raw: Raw) -> Any:
    """Field `name` read member by member, each member that is not of its type left out; UNSET if none fits."""
    if name == "sourceIPs":
        return _texts(raw)
    if name not in ("user", "impersonatedUser", "objectRef", "responseStatus", "annotations"):
        return _text(raw)
    members = _members_or_none(raw)
    if members is None:
        return UNSET
    if name == "objectRef":
        return ObjectReference(**{f: text for f in ObjectReference.__struct_fields__ if (text := _text(members.get(f))) is not UNSET})
    if name == "annotations":
        return {k: text for k, v in members.items() if (text := _text(v)) is not UNSET}
    if name == "responseStatus":
        code = members.get("code")
        try:
            return Status(code=UNSET if code is None else _INT.decode(code))
        except (msgspec.DecodeError, RecursionError):
            return Status()
    groups = members.get("groups")
    return UserInfo(username=_text(members.get("username")), groups=UNSET if groups is None else _texts(groups))


def _view_of(top: dict[str, Raw]) -> AuditEventWire:
    """The typed view of a dict-decoded event (bodies are read from the dict, not from the view)."""
    fields: dict[str, Any] = {}
    for name, decoder in _FIELD_DECODERS.items():
        raw = top.get(name)
        if raw is None:
            continue
        try:
            fields[name] = decoder.decode(raw)
        except (msgspec.DecodeError, RecursionError):  # another type, a number out of range, too deep
            fields[name] = _lenient_value(name, raw)
    return AuditEventWire(**fields)


class RecordedEvent:
    """A decoded event line: `view` to read head fields from, bodies and edits through `get`/`set`/`remove`.

    For an apiserver line `view` is also the output; for a line with unknown fields the output is `top`.
    """

    __slots__ = ("dirty", "top", "view")

    def __init__(self, view: AuditEventWire, top: dict[str, Raw] | None = None, *, dirty: bool = False) -> None:
        self.view = view
        self.top = top
        #: True once a field was changed or removed: the input bytes no longer represent the event.
        self.dirty = dirty

    def get(self, name: str) -> Raw | None:
        """The raw value of `requestObject`, `responseObject` or `metadata`; None when absent."""
        if self.top is not None:
            return self.top.get(name)
        value = getattr(self.view, name)
        return None if value is UNSET else value

    def set(self, name: str, value: Any) -> None:
        """Replace a present field: a body with a Raw, a head field (level, requestURI) with its typed value."""
        self.dirty = True
        if self.top is not None:
            self.top[name] = value if isinstance(value, Raw) else Raw(msgspec.json.encode(value))
        else:
            setattr(self.view, name, value)

    def remove(self, name: str) -> None:
        """Remove a field if present."""
        if self.top is not None:
            if self.top.pop(name, None) is not None:
                self.dirty = True
        elif getattr(self.view, name) is not UNSET:
            setattr(self.view, name, UNSET)
            self.dirty = True

    def annotate(self, note: str) -> None:
        """Say on the event what a step could not do (`BODY_NOTE_ANNOTATION`; notes of one event are joined by "; ").

        The note goes into `annotations`; when the event's `annotations` is not a JSON object, into a
        top-level `NOTES_FIELD` object instead, so that nothing recorded is replaced.
        """
        self.dirty = True
        if self.top is None:
            annotations = self.view.annotations
            if isinstance(annotations, UnsetType):
                annotations = self.view.annotations = {}
            before = annotations.get(BODY_NOTE_ANNOTATION)
            annotations[BODY_NOTE_ANNOTATION] = f"{before}; {note}" if before else note
            return
        field = "annotations"
        raw = self.top.get(field)
        members = {} if raw is None else _members_or_none(raw)
        if members is None:
            field = NOTES_FIELD
            raw = self.top.get(field)
            members = ({} if raw is None else _members_or_none(raw)) or {}
        noted = _text(members.get(BODY_NOTE_ANNOTATION))
        members[BODY_NOTE_ANNOTATION] = Raw(msgspec.json.encode(f"{noted}; {note}" if noted else note))
        self.top[field] = Raw(msgspec.json.encode(members))

    def encode(
        self,
        encoder: msgspec.json.Encoder,
        line: bytes,
        extra: bytes = b"",
        extra_keys: frozenset[str] = frozenset(),
    ) -> bytes:
        """Compact JSON of the event (`line` is the input it was decoded from), `extra` members appended last.

        `extra` is `"k":v,...` (object members without braces). An unchanged event reuses `line` as is (its exact
        bytes); a changed one is re-encoded (bodies copied raw). In the dict form, event fields named like one of
        `extra_keys` are dropped first, so the output never has a duplicate key.
        """
        if self.top is not None and extra_keys and not extra_keys.isdisjoint(self.top):
            for key in extra_keys.intersection(self.top):
                del self.top[key]
            self.dirty = True
        if not self.dirty and line.endswith(b"}"):
            if not extra:
                return line
            before = len(line) - 2
            while before >= 0 and line[before] in _WHITESPACE:
                before -= 1
            if before >= 0 and line[before] != _OPEN_BRACE:
                return b"".join((memoryview(line)[:-1], b",", extra, b"}"))
        body = encoder.encode(self.view if self.top is None else self.top)
        if not extra:
            return body
        if len(body) == 2:  # "{}"
            return b"{" + extra + b"}"
        return b"".join((memoryview(body)[:-1], b",", extra, b"}"))


def decode_event(line: bytes) -> RecordedEvent:
    """Decode one event line. Raises `MalformedEventError` when it is not a JSON object."""
    try:
        return RecordedEvent(_WIRE.decode(line))
    except msgspec.ValidationError:
        pass  # a field the struct does not know or type, or not an object at all
    except msgspec.DecodeError as exc:
        if not line.startswith(_BOM):
            raise MalformedEventError(f"invalid JSON: {exc}") from exc
        event = decode_event(line[len(_BOM) :])
        event.dirty = True
        return event
    except RecursionError:
        pass  # nested deeper than msgspec goes: the top level is split by the scanner below
    try:
        top = object_members(line)
    except msgspec.DecodeError as exc:
        raise MalformedEventError(f"invalid JSON: {exc}") from exc
    if top is None:
        raise MalformedEventError("not a JSON object")
    return RecordedEvent(_view_of(top), top)

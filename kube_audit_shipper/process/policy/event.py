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
value of an unexpected type reads as absent, never as an error.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

from kube_audit_shipper.errors import MalformedEventError

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

_WIRE = msgspec.json.Decoder(AuditEventWire)
_TOP = msgspec.json.Decoder(dict[str, Raw])
_ANY = msgspec.json.Decoder()
_FIELD_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    field.name: msgspec.json.Decoder(field.type) for field in msgspec.structs.fields(AuditEventWire) if field.name not in _BODIES
}


def _lenient_user(value: Any) -> UserInfo | UnsetType:
    if not isinstance(value, dict):
        return UNSET
    name, groups = value.get("username"), value.get("groups")
    return UserInfo(
        username=name if isinstance(name, str) else UNSET,
        groups=[g for g in groups if isinstance(g, str)] if isinstance(groups, list) else UNSET,
    )


def _lenient_object_ref(value: Any) -> ObjectReference | UnsetType:
    if not isinstance(value, dict):
        return UNSET
    return ObjectReference(**{name: item for name in ObjectReference.__struct_fields__ if isinstance(item := value.get(name), str)})


def _lenient_status(value: Any) -> Status | UnsetType:
    if not isinstance(value, dict):
        return UNSET
    code = value.get("code")
    return Status(code=code if isinstance(code, int) and not isinstance(code, bool) else UNSET)


def _lenient_value(name: str, value: Any) -> Any:
    """A plain decoded value of field `name` coerced to the view's type, or UNSET."""
    if name in ("user", "impersonatedUser"):
        return _lenient_user(value)
    if name == "objectRef":
        return _lenient_object_ref(value)
    if name == "responseStatus":
        return _lenient_status(value)
    if name == "sourceIPs":
        return [item for item in value if isinstance(item, str)] if isinstance(value, list) else UNSET
    if name == "annotations":
        return {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else UNSET
    return value if isinstance(value, str) else UNSET


def _view_of(top: dict[str, Raw]) -> AuditEventWire:
    """The typed view of a dict-decoded event (bodies are read from the dict, not from the view)."""
    fields: dict[str, Any] = {}
    for name, decoder in _FIELD_DECODERS.items():
        raw = top.get(name)
        if raw is None:
            continue
        try:
            fields[name] = decoder.decode(raw)
        except msgspec.ValidationError:
            fields[name] = _lenient_value(name, _ANY.decode(raw))
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
    try:
        top = _TOP.decode(line)
    except msgspec.ValidationError as exc:
        raise MalformedEventError(f"not a JSON object: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise MalformedEventError(f"invalid JSON: {exc}") from exc
    return RecordedEvent(_view_of(top), top)

"""Cut a recorded event down to what the policy allows.

* The effective level is the lower of the decision's level and the level the event was recorded at: bodies that
  were never recorded cannot appear. An event without a (known) `level` is taken as recorded at
  RequestResponse, so the policy's level applies.
* Level None, or a stage in the effective omitStages: the event is dropped.
* Metadata: `requestObject` and `responseObject` removed. Request: `responseObject` removed.
* `level` is rewritten to the effective level when the event has a `level` field (a field is never added).
* omitManagedFields (effective true, level Request or above): `metadata.managedFields` is removed from a single
  object, from every `items[*]` of a List and from every `rows[*].object` of a `Table`, in `requestObject` and
  `responseObject`. As upstream, a *patch* request body is left alone: it is the patch document, logged raw.

Bodies are only parsed when they contain the bytes `managedFields` (a search at C speed, no copy), and then
only along the path to it (object → metadata, or List → items → metadata): `spec`/`status` are copied as raw
bytes. Each step reads one level (`object_members`, `array_items`), so a body nested deeper than msgspec goes
is stripped all the same.

A body that still cannot be stripped (it is not valid JSON, or a Table nests Tables deeper than Python
recurses) is **shipped as recorded**, managedFields included, and the event says so in
`annotations["kube-audit-shipper.io/body-not-parsed"]`: omitManagedFields saves volume, it hides nothing a
security team must not see, so the evidence is kept whole rather than cut or dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import UNSET, Raw

from kube_audit_shipper.jsonscan import array_items, object_members
from kube_audit_shipper.process.policy.event import RecordedEvent
from kube_audit_shipper.process.policy.match import Decision
from kube_audit_shipper.process.policy.schema import LEVEL_RANK, LEVELS, RANK_NONE, RANK_REQUEST, RANK_REQUEST_RESPONSE

KEPT = 0
DROPPED_LEVEL = 1
DROPPED_STAGE = 2

_MANAGED_FIELDS = b"managedFields"
#: `_MANAGED_FIELDS in value` for bytes and Raw alike, without copying a Raw into bytes first.
_MANAGED_SEARCH = re.compile(re.escape(_MANAGED_FIELDS)).search
_TABLE_KIND = b'"Table"'
_REASON_CHARS = 200
_ENCODER = msgspec.json.Encoder()


def recorded_rank(recorded_level: str | None) -> int:
    """Rank of the level an event was recorded at; absent or unknown counts as RequestResponse."""
    return LEVEL_RANK.get(recorded_level, RANK_REQUEST_RESPONSE) if recorded_level else RANK_REQUEST_RESPONSE


def effective_level(decision_level: int, recorded_level: str | None) -> int:
    """min(policy level, recorded level) as a rank."""
    recorded = recorded_rank(recorded_level)
    return decision_level if decision_level < recorded else recorded


def trim_event(event: RecordedEvent, decision: Decision) -> int:
    """Apply `decision` to `event` in place; return KEPT, DROPPED_LEVEL or DROPPED_STAGE."""
    view = event.view
    recorded = view.level or None
    recorded_at = LEVEL_RANK.get(recorded, RANK_REQUEST_RESPONSE) if recorded else RANK_REQUEST_RESPONSE  # recorded_rank, inline
    _, _, decided, omit_stages, omit_managed_fields = decision
    level = decided if decided < recorded_at else recorded_at
    if level == RANK_NONE:
        return DROPPED_LEVEL
    if view.stage and view.stage in omit_stages:
        return DROPPED_STAGE
    # Removed by the effective level even when the recorded level says they should not be there (hand-made
    # events): a Metadata event never ships a body. (A typed event without bodies, most events, needs no call.)
    typed_without_bodies = event.top is None and view.requestObject is UNSET and view.responseObject is UNSET
    if not typed_without_bodies:
        if level < RANK_REQUEST:
            event.remove("requestObject")
            event.remove("responseObject")
        elif level < RANK_REQUEST_RESPONSE:
            event.remove("responseObject")
    if recorded is not None and recorded != LEVELS[level]:
        event.set("level", LEVELS[level])
    if omit_managed_fields and level >= RANK_REQUEST and not typed_without_bodies:
        if view.verb != "patch":
            _strip_field(event, "requestObject")
        _strip_field(event, "responseObject")
    return KEPT


def _strip_field(event: RecordedEvent, name: str) -> None:
    raw = event.get(name)
    if raw is None:
        return
    try:
        stripped = strip_managed_fields(raw)
    except Exception as exc:  # noqa: BLE001  # shipped as recorded, and the event says why
        reason = f"{type(exc).__name__}: {exc}"[:_REASON_CHARS]
        event.annotate(f"{name}: managedFields not removed, shipped as recorded: the body could not be parsed ({reason})")
        return
    if stripped is not None:
        event.set(name, stripped)


def strip_managed_fields(body: Raw | bytes) -> Raw | None:
    """`body` without `metadata.managedFields` (object, List items, Table rows), or None when nothing changed."""
    if _MANAGED_SEARCH(body) is None:
        return None
    top = object_members(body)
    if top is None:
        return None  # an array (JSON patch), a string...: no object metadata to strip
    changed = _strip_object_metadata(top)
    items = top.get("items")
    if items is not None:
        changed |= _strip_each(top, "items", items, _strip_object_metadata)
    rows = top.get("rows")
    kind = top.get("kind")
    if rows is not None and kind is not None and bytes(kind) == _TABLE_KIND:
        changed |= _strip_each(top, "rows", rows, _strip_row_object)
    return Raw(_ENCODER.encode(top)) if changed else None


# Changed parts are left decoded (a member dict, a list of elements) and encoded once, with the body: the same
# bytes as encoding each part on its own and embedding it raw, one copy instead of one per level. Unchanged
# elements stay the recorded bytes. The depth of what is encoded at once stays bounded (a Table row's object is
# encoded by its own strip_managed_fields call), so no body is too deep for the encoder that was not before.


def _strip_object_metadata(obj: dict[str, Any]) -> bool:
    """Remove `metadata.managedFields` from a decoded object in place; True if it was there."""
    metadata = obj.get("metadata")
    if metadata is None or _MANAGED_SEARCH(metadata) is None:
        return False
    fields = object_members(metadata)
    if fields is None or fields.pop("managedFields", None) is None:
        return False
    obj["metadata"] = fields
    return True


def _strip_row_object(row: dict[str, Any]) -> bool:
    """A Table row: strip the embedded `object` (a full object or PartialObjectMetadata)."""
    embedded = row.get("object")
    if embedded is None:
        return False
    stripped = strip_managed_fields(embedded)
    if stripped is None:
        return False
    row["object"] = stripped
    return True


def _strip_each(container: dict[str, Any], key: str, raw_array: Raw, strip: Callable[[dict[str, Any]], bool]) -> bool:
    """Apply `strip` to every object element of `container[key]`; True (and the array replaced) if any changed."""
    if _MANAGED_SEARCH(raw_array) is None:
        return False
    elements: list[Any] | None = array_items(raw_array)
    if elements is None:
        return False
    changed = False
    for index, element in enumerate(elements):
        if _MANAGED_SEARCH(element) is None:
            continue
        obj = object_members(element)
        if obj is not None and strip(obj):
            elements[index] = obj
            changed = True
    if changed:
        container[key] = elements
    return changed

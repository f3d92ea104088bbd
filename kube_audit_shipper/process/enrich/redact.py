"""Mask secrets in request/response bodies and in the requestURI query.

Bodies: a rule names a resource (`group`, `resource[/subresource]`, matched against `objectRef`) and dotted field
paths. For an event on that resource, each path is masked in `requestObject` and `responseObject` (after
trimming, so only bodies still shipped are looked at), in the object itself, in every `items[*]` of a List and
every `rows[*].object` of a Table. A patch body that is a JSON patch (an array of operations) has the `value`
of every operation that writes at, above or under a masked path masked accordingly. A masked value:

* a mapping (Secret `data`): each of its values is masked, the keys are kept (which keys changed is useful);
* null: left as is; anything else: masked as a whole.

Masking is `replace` (the configured text, `***` by default) or `hash` (`sha256:<hex>` of the value's text, or of
its JSON for a non-string; HMAC-SHA256 when `hash_key` is set), so that a change of value stays visible.

requestURI: the value of every query parameter whose (decoded, case-insensitive) name is listed is masked the
same way; the rest of the URI is kept byte for byte.

A body of an affected resource that cannot be parsed (nested deeper than msgspec goes, a number out of range,
anything else that fails) is **replaced by a marker**, never shipped as recorded: it may hold the very secret
the rule is there to mask, and a body that cannot be read cannot be shown to be free of it. The marker is
`{"kube-audit-shipper.io/withheld": "<why>", "bytes": <size of the body>}` (plus `"sha256"` of the body in hash
mode, keyed like every hash, so a team can match it against the node's own log), and the event says so in
`annotations["kube-audit-shipper.io/body-not-parsed"]`. The event itself (who, what, when) ships as usual.
The same holds for a requestURI whose query cannot be masked: the query is withheld.

Built-in rules (`default_rules`): Secret `data`, `stringData` and the `kubectl.kubernetes.io/last-applied-
configuration` annotation (it holds the whole Secret as JSON); TokenRequest (`serviceaccounts/token`) and
`tokenrequests` `status.token`; TokenReview `spec.token`; query parameters `token`, `access_token`, `id_token`,
`refresh_token`, `client_secret`, `password`, `api_key`, `apikey`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any
from urllib.parse import quote, unquote_plus

import msgspec
from msgspec import Raw

from kube_audit_shipper.process.enrich.config import RedactConfig
from kube_audit_shipper.process.enrich.view import EventView, api_group

FieldPath = tuple[str, ...]

_REQUEST_OBJECT = "requestObject"
_RESPONSE_OBJECT = "responseObject"
#: The key of the marker object that replaces a body redaction could not parse.
WITHHELD_KEY = "kube-audit-shipper.io/withheld"
WITHHELD_QUERY = "withheld-by-kube-audit-shipper"
_REASON_CHARS = 200


def parse_field_path(text: str) -> FieldPath:
    """`a.b\\.c.d` → ("a", "b.c", "d")."""
    segments: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            segments.append("".join(current))
            current = []
        else:
            current.append(char)
    segments.append("".join(current))
    return tuple(segments)


def parse_json_pointer(pointer: str) -> FieldPath | None:
    """RFC 6901 pointer → segments ("" is the whole document); None when not a pointer."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        return None
    return tuple(part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/"))


class Redactor:
    """Masks the configured secrets of one event in place. Built once; `apply` is called per event."""

    def __init__(self, config: RedactConfig) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder()
        by_resource: dict[tuple[str, str], list[FieldPath]] = {}
        for rule in config.effective_rules():
            paths = by_resource.setdefault((rule.group, rule.resource), [])
            paths.extend(parse_field_path(field) for field in rule.fields)
        self._paths = {key: tuple(paths) for key, paths in by_resource.items()}
        #: The resources (without subresource) some body rule names: a quick filter before any body is looked at.
        self._resources = frozenset(resource.partition("/")[0] for _, resource in self._paths)
        self._query_params = config.effective_query_params()
        # Quick test before splitting a query, at C speed, on `"&" + query.lower()`: a parameter whose lowercased
        # name is listed (lowercasing maps `&`, `=`, `%` and `+` to themselves and nothing else to them, so the
        # parameters of the lowered query are the lowered parameters), or whose name holds a `%` or `+` (decoding
        # could make it a listed one). A `%` in a value (watches' selectors, exec commands) changes no name. The
        # regex starts with a literal `&`, so only parameter starts are tried: ~0.2-0.8 µs a query, where a
        # case-insensitive search costs several µs on a long one.
        alternatives = "|".join(re.escape(name) for name in sorted(self._query_params))
        self._query_names = re.compile(rf"(?:^|&)(?:{alternatives})=", re.IGNORECASE) if alternatives else None
        self._may_mask = re.compile(rf"&(?:(?:{alternatives})=|[^&=%+]*+[%+])").search if alternatives else _nothing
        self._hash = config.mode == "hash"
        self._replacement = config.replacement
        self._hash_key = config.hash_key.encode() if config.hash_key is not None else None
        #: Bodies replaced by a marker because they could not be parsed (for a metric: a security team wants to know).
        self.withheld = 0

    @property
    def active(self) -> bool:
        """Whether any rule or query parameter is configured."""
        return bool(self._paths or self._query_params)

    def apply(self, event: EventView) -> None:
        view = event.view
        ref = view.objectRef
        if ref and ref.resource in self._resources:  # bodies of other resources are never masked: not even looked up
            request, response = event.get(_REQUEST_OBJECT), event.get(_RESPONSE_OBJECT)
            if request is not None or response is not None:
                paths = self._body_paths(event)
                if paths:
                    for name, raw in ((_REQUEST_OBJECT, request), (_RESPONSE_OBJECT, response)):
                        if raw is not None:
                            try:
                                redacted = self.redact_body(raw, paths)
                            except Exception as exc:  # noqa: BLE001  # fail closed: the body is withheld, never leaked
                                redacted = self._withhold(event, name, raw, exc)
                            if redacted is not None:
                                event.set(name, Raw(redacted))
        uri = view.requestURI
        if uri and self._query_names is not None and "?" in uri:
            try:
                redacted_uri = self.redact_uri(uri)
            except Exception as exc:  # noqa: BLE001  # fail closed, as for a body
                redacted_uri = uri.partition("?")[0] + "?" + WITHHELD_QUERY
                event.annotate(f"requestURI: query withheld: it could not be parsed to mask tokens ({_reason(exc)})")
            if redacted_uri != uri:
                event.set("requestURI", redacted_uri)

    def _withhold(self, event: EventView, name: str, raw: Raw | bytes, exc: Exception) -> bytes:
        """The marker that replaces a body redaction could not parse; the event notes why."""
        self.withheld += 1
        body = bytes(raw)
        reason = _reason(exc)
        marker: dict[str, object] = {
            WITHHELD_KEY: f"not parsed for redaction ({reason}); withheld so that no secret in it can leak",
            "bytes": len(body),
        }
        if self._hash:
            marker["sha256"] = self._digest(body)
        event.annotate(f"{name}: replaced by a marker: the body could not be parsed to mask secrets ({reason}); {len(body)} bytes withheld")
        return self._encoder.encode(marker)

    def _body_paths(self, event: EventView) -> tuple[FieldPath, ...] | None:
        ref = event.view.objectRef
        if not ref or not self._paths:
            return None
        resource = f"{ref.resource}/{ref.subresource}" if ref.subresource else ref.resource or ""
        return self._paths.get((api_group(ref), resource))

    def redact_body(self, raw: Raw | bytes, paths: tuple[FieldPath, ...]) -> bytes | None:
        """The body with `paths` masked, or None when nothing was masked."""
        body = self._decoder.decode(raw)
        changed = False
        if isinstance(body, dict):
            changed = self._redact_object(body, paths)
            items = body.get("items")
            if isinstance(items, list):
                for item in items:
                    changed |= self._redact_object(item, paths)
            rows = body.get("rows")
            if isinstance(rows, list) and body.get("kind") == "Table":
                for row in rows:
                    if isinstance(row, dict):
                        changed |= self._redact_object(row.get("object"), paths)
        elif isinstance(body, list):
            for operation in body:
                changed |= self._redact_patch_operation(operation, paths)
        return self._encoder.encode(body) if changed else None

    def _redact_object(self, obj: Any, paths: tuple[FieldPath, ...]) -> bool:
        changed = False
        for path in paths:
            changed |= self._redact_path(obj, path)
        return changed

    def _redact_path(self, node: Any, path: FieldPath) -> bool:
        for key in path[:-1]:
            if not isinstance(node, dict):
                return False
            node = node.get(key)
        if not isinstance(node, dict) or path[-1] not in node or node[path[-1]] is None:
            return False
        node[path[-1]] = self._mask_field(node[path[-1]])
        return True

    def _redact_patch_operation(self, operation: Any, paths: tuple[FieldPath, ...]) -> bool:
        if not isinstance(operation, dict) or "value" not in operation or not isinstance(operation.get("path"), str):
            return False
        target = parse_json_pointer(operation["path"])
        if target is None or operation["value"] is None:
            return False
        changed = False
        for path in paths:
            if path[: len(target)] == target:  # the operation writes the field or one of its parents
                rest = path[len(target) :]
                if not rest:
                    operation["value"] = self._mask_field(operation["value"])
                    return True
                changed |= self._redact_path(operation["value"], rest)
            elif target[: len(path)] == path:  # the operation writes inside the field
                operation["value"] = self._mask_value(operation["value"])
                return True
        return changed

    def _mask_field(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: (item if item is None else self._mask_value(item)) for key, item in value.items()}
        return self._mask_value(value)

    def _mask_value(self, value: Any) -> str:
        if not self._hash:
            return self._replacement
        data = value.encode() if isinstance(value, str) else self._encoder.encode(value)
        return "sha256:" + self._digest(data)

    def _digest(self, data: bytes) -> str:
        return hmac.new(self._hash_key, data, hashlib.sha256).hexdigest() if self._hash_key is not None else hashlib.sha256(data).hexdigest()

    def redact_uri(self, uri: str) -> str:
        """`uri` with the values of the listed query parameters masked; unchanged otherwise."""
        path, _, query = uri.partition("?")
        if self._query_names is None:
            return uri
        if self._may_mask("&" + query.lower()) is None:
            return uri  # no parameter to mask (see __init__)
        parts = query.split("&")
        changed = False
        for index, part in enumerate(parts):
            name, equals, value = part.partition("=")
            if equals and unquote_plus(name).lower() in self._query_params:
                masked = self._mask_value(unquote_plus(value))
                parts[index] = name + "=" + quote(masked, safe="*:")
                changed = True
        return path + "?" + "&".join(parts) if changed else uri


def _reason(exc: BaseException) -> str:
    """Why a body could not be redacted, as it is shipped: the exception's type, and its message only when it
    cannot quote the body (msgspec's name a position or a path, never a value)."""
    if isinstance(exc, RecursionError):
        return "RecursionError: nested deeper than the parser goes"
    if isinstance(exc, msgspec.MsgspecError):
        return f"{type(exc).__name__}: {exc}"[:_REASON_CHARS]
    return type(exc).__name__


def _nothing(_: str) -> None:
    return None

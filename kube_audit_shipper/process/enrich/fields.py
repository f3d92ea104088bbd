"""Fields added to every shipped event.

Output layout (all appended after the event's own fields; an audit Event field is never overwritten):

* the static fields of `enrich.static_fields` at the top level, e.g. `"cluster_id": "c-1234"`;
* `"node": "<node name>"` (`enrich.node_field`; the node name defaults to the host name);
* one object of derived security fields, `"derived"` by default (`enrich.derived.field`), holding whichever of
  these can be derived from the event (a field that cannot is left out, never null):

| field | value |
| --- | --- |
| `source_ip` | first entry of `sourceIPs` (the client, as far as the apiserver knows) |
| `source_ip_public` | true unless that address is private, loopback, link-local, CGNAT, ... (`address`) |
| `user_kind` | `serviceaccount`, `node`, `system`, `anonymous`, `human` or `unknown` (`identity`) |
| `effective_user` | impersonated user; for a shared admin, the user named in the authorization reason; else the user |
| `outcome` | `success` when `responseStatus.code` < 400, else `failure` |
| `latency_ms` | `stageTimestamp - requestReceivedTimestamp` in ms (microsecond resolution) |
| `pod_session` | exec/attach/portforward: `type`, `namespace`, `pod`, `container`, `command`, `command_line`, `ports` |

`derive` states what each field is (a dict); `members` is the hot path and builds the same bytes without it:
the encoded members of a source address and of an identity (user kind and effective user) are memoised (the
same few repeat on every request; bounded, so a large cluster's long tail costs a recomputation, never
memory), the outcome by status code, and only latency and pod sessions are encoded per event.
tests/unit/process/test_fast_paths.py checks `members` against the encoded `derive` on every test corpus.
"""

from __future__ import annotations

import functools

import msgspec

from kube_audit_shipper.process.enrich.address import is_public_ip
from kube_audit_shipper.process.enrich.config import EnrichConfig
from kube_audit_shipper.process.enrich.identity import NODES_GROUP, REASON_ANNOTATION, UNAUTHENTICATED_GROUP, effective_user, user_kind
from kube_audit_shipper.process.enrich.session import SESSION_SUBRESOURCES, pod_session
from kube_audit_shipper.process.enrich.timestamps import latency_ms
from kube_audit_shipper.process.enrich.view import AuditEventView, EventView

_IP_CACHE_SIZE = 4096
#: Memoised encoded members (per source address, per identity): bounded, cleared when full.
_PARTS_CACHE_SIZE = 8192
_NO_USER = object()  # the identity key of an event without a user


class Enricher:
    """Builds the members enrichment appends to one event. Built once per pipeline; `members` is the hot path."""

    def __init__(self, config: EnrichConfig, node_name: str) -> None:
        self._encoder = msgspec.json.Encoder()
        static: dict[str, object] = dict(config.static_fields)
        if config.node_field:
            static[config.node_field] = node_name
        self._static = self._encoder.encode(static)[1:-1] if static else b""
        derived = config.derived
        self._derived = derived.enabled and bool(derived.include)
        self._derived_key = self._encoder.encode(derived.field) + b":"
        self._static_prefix = self._static + b"," if self._static else b""
        include = frozenset(derived.include)
        self._source_ip = "source_ip" in include
        self._source_ip_public = "source_ip_public" in include
        self._user_kind = "user_kind" in include
        self._effective_user = "effective_user" in include
        self._outcome = "outcome" in include
        self._latency = "latency_ms" in include
        self._pod_session = "pod_session" in include
        self._shared_admins = frozenset(derived.shared_admin_users)
        self._system_prefixes = tuple(derived.system_user_prefixes)
        # Per instance (no global state): the same few source addresses repeat for every request.
        self._is_public = functools.lru_cache(maxsize=_IP_CACHE_SIZE)(is_public_ip)
        self._open = b"".join((self._static_prefix, self._derived_key, b"{"))
        self._address_parts: dict[str, bytes] = {}
        self._identity_parts: dict[tuple[object, ...], bytes] = {}
        self._outcome_parts: dict[int, bytes] = {}
        #: The top-level keys this enricher may add.
        self.added_keys = frozenset(static) | ({derived.field} if self._derived else set())

    @property
    def active(self) -> bool:
        """Whether this enricher adds anything at all."""
        return bool(self._static) or self._derived

    def members(self, event: EventView) -> bytes:
        """`"name":value,...` (JSON object members without braces) to append to `event`; b"" when none.

        The same bytes as the encoded `derive(event)` (see the module docstring), and the same containment: a
        field that cannot be derived is left out, the others are kept.
        """
        if not self._derived:
            return self._static
        try:
            parts = self._parts(event.view)
        except Exception:  # noqa: BLE001  # cannot happen for values derive() makes (an encoding failure); the event still ships
            return self._static
        if not parts:
            return self._static
        return b"".join((self._open, b",".join(parts), b"}"))

    def _parts(self, view: AuditEventView) -> list[bytes]:
        """The encoded derived members, in derive's order. Each value is guarded as in derive; an encoding
        failure raises (members then leaves the derived object out, as it does for derive's dict)."""
        parts: list[bytes] = []
        if self._source_ip or self._source_ip_public:
            try:
                addresses = view.sourceIPs
                address = addresses[0] if addresses else None
            except Exception:  # noqa: BLE001  # left out (see derive)
                address = None
            if address is not None:
                part = self._address_parts.get(address)
                if part is None:
                    part = self._address_part(address)
                if part:
                    parts.append(part)
        if self._user_kind or self._effective_user:
            part = self._identity_part(view)
            if part:
                parts.append(part)
        if self._outcome:
            try:
                status = view.responseStatus
                code = status.code if status else None
                if code:
                    part = self._outcome_parts.get(code)
                    if part is None:
                        part = self._outcome_part(code)
                    parts.append(part)
            except Exception:  # noqa: BLE001  # left out (see derive)
                pass
        if self._latency:
            latency = None
            try:  # noqa: SIM105  # no context manager on the hot path
                latency = latency_ms(view.requestReceivedTimestamp or None, view.stageTimestamp or None)
            except Exception:  # noqa: BLE001  # left out (see derive)
                pass
            if latency is not None:
                parts.append(b'"latency_ms":' + self._encoder.encode(latency))
        if self._pod_session and _may_be_session(view):
            session = None
            try:  # noqa: SIM105  # no context manager on the hot path
                session = pod_session(view)
            except Exception:  # noqa: BLE001  # left out (see derive)
                pass
            if session is not None:
                parts.append(b'"pod_session":' + self._encoder.encode(session))
        return parts

    def derive(self, event: EventView) -> dict[str, object]:
        """The derived security fields of one event (only those that can be derived).

        Each field is computed on its own: one that cannot be (an odd value, or a bug) is left out, the others
        are kept, and the event ships. The guards cost nothing while nothing raises.
        """
        view = event.view
        out: dict[str, object] = {}
        if self._source_ip or self._source_ip_public:
            try:
                addresses = view.sourceIPs
                if addresses:
                    self._address(addresses[0], out)
            except Exception:  # noqa: BLE001  # left out (see the docstring)
                pass
        out.update(self._identity(view))
        if self._outcome:
            try:
                status = view.responseStatus
                code = status.code if status else None
                if code:
                    out["outcome"] = "success" if code < 400 else "failure"
            except Exception:  # noqa: BLE001  # left out (see the docstring)
                pass
        if self._latency:
            try:
                latency = latency_ms(view.requestReceivedTimestamp or None, view.stageTimestamp or None)
                if latency is not None:
                    out["latency_ms"] = latency
            except Exception:  # noqa: BLE001  # left out (see the docstring)
                pass
        if self._pod_session:
            try:
                session = pod_session(view)
                if session is not None:
                    out["pod_session"] = session
            except Exception:  # noqa: BLE001  # left out (see the docstring)
                pass
        return out

    def _address(self, address: str, out: dict[str, object]) -> None:
        """source_ip and source_ip_public of one address into `out` (a value that raises leaves the rest out)."""
        if self._source_ip:
            out["source_ip"] = address
        if self._source_ip_public:
            public = self._is_public(address)
            if public is not None:
                out["source_ip_public"] = public

    def _identity(self, view: AuditEventView) -> dict[str, object]:
        """user_kind and effective_user, each computed on its own."""
        out: dict[str, object] = {}
        user = view.user
        if self._user_kind:
            try:  # noqa: SIM105  # no context manager on the hot path
                out["user_kind"] = user_kind(user, self._system_prefixes)
            except Exception:  # noqa: BLE001  # left out (see derive)
                pass
        if self._effective_user:
            try:
                impersonated = view.impersonatedUser
                impersonated_name = (impersonated.username or None) if impersonated else None
                reason = None
                if impersonated_name is None and user and user.username in self._shared_admins:
                    annotations = view.annotations
                    reason = annotations.get(REASON_ANNOTATION) if annotations else None
                acting = effective_user(user, impersonated_name, reason, self._shared_admins)
                if acting is not None:
                    out["effective_user"] = acting
            except Exception:  # noqa: BLE001  # left out (see derive)
                pass
        return out

    def _address_part(self, address: str) -> bytes:
        """The encoded `_address` members of one address, memoised (a long tail of client addresses misses:
        built without a dict)."""
        parts = []
        if self._source_ip:
            parts.append(b'"source_ip":' + self._encoder.encode(address))  # cannot fail; if it did: as derive's dict
        if self._source_ip_public:
            try:
                public = self._is_public(address)
            except Exception:  # noqa: BLE001  # left out (see derive)
                public = None
            if public is not None:
                parts.append(b'"source_ip_public":true' if public else b'"source_ip_public":false')
        part = b",".join(parts)
        if len(self._address_parts) >= _PARTS_CACHE_SIZE:
            self._address_parts.clear()
        self._address_parts[address] = part
        return part

    def _identity_part(self, view: AuditEventView) -> bytes:
        """The encoded `_identity` members, memoised by what decides both fields: the user name, membership of
        the two groups user_kind looks at, the impersonated name and, for a shared admin, the RBAC reason."""
        try:
            user = view.user
            impersonated = view.impersonatedUser
            impersonated_name = (impersonated.username or None) if impersonated else None
            reason = None
            if user:
                name: object = user.username
                groups = user.groups
                anonymous = bool(groups) and UNAUTHENTICATED_GROUP in groups  # type: ignore[operator]
                node = bool(groups) and NODES_GROUP in groups  # type: ignore[operator]
                if impersonated_name is None and name in self._shared_admins:
                    annotations = view.annotations
                    reason = annotations.get(REASON_ANNOTATION) if annotations else None
            else:
                name, anonymous, node = _NO_USER, False, False
            key = (name, anonymous, node, impersonated_name, reason)
            part = self._identity_parts.get(key)
        except Exception:  # noqa: BLE001  # an odd value (unhashable, ...): computed field by field, as derive does
            return self._encoder.encode(self._identity(view))[1:-1]
        if part is None:
            part = self._encoder.encode(self._identity(view))[1:-1]
            if len(self._identity_parts) >= _PARTS_CACHE_SIZE:
                self._identity_parts.clear()
            self._identity_parts[key] = part
        return part

    def _outcome_part(self, code: int) -> bytes:
        part = b'"outcome":"success"' if code < 400 else b'"outcome":"failure"'
        if len(self._outcome_parts) < _PARTS_CACHE_SIZE:
            self._outcome_parts[code] = part
        return part


def _may_be_session(view: AuditEventView) -> bool:
    """False when `pod_session` certainly gives None (most events): a subresource other than a session's, or
    no objectRef and no `/pods/` in the URI."""
    ref = view.objectRef
    if ref:
        return ref.subresource in SESSION_SUBRESOURCES
    uri = view.requestURI
    return bool(uri) and "/pods/" in uri  # type: ignore[operator]

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
"""

from __future__ import annotations

import functools

import msgspec

from kube_audit_shipper.process.enrich.address import is_public_ip
from kube_audit_shipper.process.enrich.config import EnrichConfig
from kube_audit_shipper.process.enrich.identity import REASON_ANNOTATION, effective_user, user_kind
from kube_audit_shipper.process.enrich.session import pod_session
from kube_audit_shipper.process.enrich.timestamps import latency_ms
from kube_audit_shipper.process.enrich.view import EventView

_IP_CACHE_SIZE = 4096


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
        #: The top-level keys this enricher may add.
        self.added_keys = frozenset(static) | ({derived.field} if self._derived else set())

    @property
    def active(self) -> bool:
        """Whether this enricher adds anything at all."""
        return bool(self._static) or self._derived

    def members(self, event: EventView) -> bytes:
        """`"name":value,...` (JSON object members without braces) to append to `event`; b"" when none."""
        if not self._derived:
            return self._static
        derived = self.derive(event)
        if not derived:
            return self._static
        try:
            encoded = self._encoder.encode(derived)
        except Exception:  # noqa: BLE001  # cannot happen for values derive() makes; the event still ships
            return self._static
        return b"".join((self._static_prefix, self._derived_key, encoded))

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
                    address = addresses[0]
                    if self._source_ip:
                        out["source_ip"] = address
                    if self._source_ip_public:
                        public = self._is_public(address)
                        if public is not None:
                            out["source_ip_public"] = public
            except Exception:  # noqa: BLE001  # left out (see the docstring)
                pass
        user = view.user
        if self._user_kind:
            try:  # noqa: SIM105  # no context manager on the hot path
                out["user_kind"] = user_kind(user, self._system_prefixes)
            except Exception:  # noqa: BLE001  # left out (see the docstring)
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
            except Exception:  # noqa: BLE001  # left out (see the docstring)
                pass
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

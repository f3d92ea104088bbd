"""One event as the rules see it: the decoded head (typed view), bodies decoded lazily and at most once.

The pipeline decodes each line once at the top level (`kube_audit_shipper.process.policy.event.decode_event`),
keeping `requestObject`/`responseObject` as raw bytes. A rule that reads a path inside a body makes the
context decode that body, once for all the rules evaluated on the event; an event no candidate rule reads a
body of is never parsed further. A body that cannot be decoded (nesting deeper than the decoder's limit, a
number out of range) raises `BodyError` for every rule that reads it: counted per rule, never fatal.

`Env` holds what computed values need from the configuration: identity settings, internal networks, intel.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Any

import msgspec
from msgspec import UNSET, Raw

from kube_audit_shipper.process.detect.eventtime import event_time_s
from kube_audit_shipper.process.detect.intel import SourceIntel
from kube_audit_shipper.process.enrich.address import is_public_ip

_decode_json = msgspec.json.decode
_NOT_YET = object()
_IP_CACHE_SIZE = 8192


class BodyError(Exception):
    """A body a rule reads could not be decoded; the message says which and why."""


class Failed:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Env:
    """Engine-wide settings the computed values use (built once)."""

    def __init__(
        self,
        *,
        shared_admin_users: Iterable[str] = ("kubernetes-admin",),
        system_user_prefixes: Iterable[str] = ("system:", "eks:"),
        internal_cidrs: Iterable[str] = (),
        intel: SourceIntel | None = None,
    ) -> None:
        self.shared_admin_users = frozenset(shared_admin_users)
        self.system_user_prefixes = tuple(system_user_prefixes)
        self.internal_networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in internal_cidrs)
        self.intel = intel
        self.is_public = functools.lru_cache(maxsize=_IP_CACHE_SIZE)(self._is_public)

    def _is_public(self, text: str) -> bool | None:
        public = is_public_ip(text)
        if public and self.internal_networks:
            address = ipaddress.ip_address(text.strip())
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            if any(address in network for network in self.internal_networks):
                return False
        return public


class EventContext:
    """The event being evaluated. `cache` holds computed values for the rules that follow on the same event."""

    __slots__ = ("cache", "env", "event", "time_s", "view")

    def __init__(self, event: Any, env: Env) -> None:
        self.event = event
        self.view = event.view
        self.env = env
        self.cache: dict[str, Any] | None = None
        self.time_s: Any = _NOT_YET

    def body(self, name: str) -> Any:
        """The decoded `requestObject`/`responseObject`/`metadata`, UNSET when absent (or null)."""
        cache = self.cache
        if cache is None:
            cache = self.cache = {}
        value = cache.get(name, _NOT_YET)
        if value is _NOT_YET:
            raw = self.event.get(name)
            value = decode_raw(raw, name) if raw is not None else UNSET
            cache[name] = value
        if type(value) is Failed:
            raise BodyError(value.reason)
        return value

    def top_field(self, name: str) -> Any:
        """A top-level field the typed view does not have (only dict-decoded events keep those)."""
        top = self.event.top
        if top is None:
            return UNSET
        return self.body(name) if name in top else UNSET

    def memo(self, name: str) -> Any:
        cache = self.cache
        return _NOT_YET if cache is None else cache.get(name, _NOT_YET)

    def remember(self, name: str, value: Any) -> Any:
        cache = self.cache
        if cache is None:
            cache = self.cache = {}
        cache[name] = value
        return value

    def event_time(self) -> float | None:
        """Seconds since the epoch of this event, None when unreadable (computed once)."""
        value = self.time_s
        if value is _NOT_YET:
            try:
                value = event_time_s(self.view)
            except Exception:  # noqa: BLE001  # an odd value in an odd event never stops detection
                value = None
            self.time_s = value
        return value  # type: ignore[no-any-return]


def decode_raw(raw: Raw, name: str) -> Any:
    """A raw JSON value decoded; null → UNSET; undecodable → a failure marker that raises on use."""
    try:
        value = _decode_json(raw)
    except RecursionError:
        return Failed(f"{name}: nested too deeply to decode")
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, MemoryError) as exc:
        return Failed(f"{name}: cannot be decoded: {exc}")
    return UNSET if value is None else value


NOT_YET = _NOT_YET

"""Is a source IP public (reachable from the internet), or internal to some network?

Not public: private (RFC 1918, IPv6 unique-local fc00::/7 and the other IANA special-purpose "private" blocks),
loopback, link-local, CGNAT shared space (100.64.0.0/10, what many cloud VPCs and Kubernetes pod networks use),
unspecified, multicast and reserved addresses. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are judged by
their IPv4 address. An unparseable value gives None.

Speed (every event carries a client address, and a large cluster's clients are many): `ipaddress` costs
10-20 µs per address, so an address in canonical form (what kube-apiserver writes: Go's `net.IP.String()`) is
parsed by `inet_pton` instead and judged by the widest prefix (IPv4 /8, /16, /24; IPv6 /16 ... /64) that no
special-purpose network `ipaddress` knows cuts in two: every address of such a prefix gets the same answer,
so one `ipaddress` answer per prefix serves all of them (256 /8s cover almost all of IPv4). Prefixes that
hold a narrower network (192.0.0.0/24, ::/64, ...) and any text that is not canonical take the `ipaddress`
path. The networks are read from `ipaddress` itself at import, so the answer is the `ipaddress` one by
construction (tests/unit/process/test_fast_paths.py compares both).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
#: The prefix lengths tried, widest first, in bytes of the packed address.
_V4_LEVELS = (1, 2, 3)
_V6_LEVELS = (2, 4, 6, 8)
_MAPPED = b"\x00" * 10 + b"\xff\xff"
_PREFIX_CACHE_MAX = 1 << 17
_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6


def classify(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a public address (the definition of the module docstring), by `ipaddress`."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            address = mapped
        elif address.scope_id:
            return False  # a zoned address is link-scoped by definition
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return False
    return not (address.is_private or address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast or address.is_reserved)


def _slow(text: str) -> bool | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return classify(address)


def _narrow_prefixes(constants: Any, width: int, levels: tuple[int, ...], extra: tuple[str, ...]) -> tuple[frozenset[bytes], ...] | None:
    """Per level, the prefixes that hold a special-purpose network narrower than the prefix (their addresses are
    not all judged alike); None when `ipaddress` does not expose its networks (every address is then exact)."""
    if constants is None:
        return None
    networks = [ipaddress.ip_network(text) for text in extra]
    for value in vars(constants).values():
        items = value if isinstance(value, (list, tuple, set, frozenset)) else (value,)
        for item in items:
            if isinstance(item, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                networks.append(ipaddress.ip_network(item))
            elif isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                networks.append(item)
    networks = [network for network in networks if network.max_prefixlen == width]
    return tuple(frozenset(network.network_address.packed[:level] for network in networks if network.prefixlen > 8 * level) for level in levels)


# CGNAT is ours; IPv6 loopback (::1) and unspecified (::) are judged by value, not by a listed network.
_NARROW_V4 = _narrow_prefixes(getattr(ipaddress, "_IPv4Constants", None), 32, _V4_LEVELS, (str(_CGNAT),))
_NARROW_V6 = _narrow_prefixes(getattr(ipaddress, "_IPv6Constants", None), 128, _V6_LEVELS, ("::1/128", "::/128"))
# A pure function's memo (prefix → answer), bounded; one per process.
_V4_PREFIXES: dict[bytes, bool] = {}
_V6_PREFIXES: dict[bytes, bool] = {}


def _by_prefix(packed: bytes, levels: tuple[int, ...], narrow: tuple[frozenset[bytes], ...], cache: dict[bytes, bool], text: str) -> bool | None:
    for level, narrower in zip(levels, narrow, strict=True):
        key = packed[:level]
        if key in narrower:
            continue
        public = cache.get(key)
        if public is None:
            public = _slow(text)
            if public is None:  # cannot happen for what inet_pton accepted; never cached
                return None
            if len(cache) >= _PREFIX_CACHE_MAX:
                cache.clear()
            cache[key] = public
        return public
    return _slow(text)


def is_public_ip(text: str) -> bool | None:
    """True for a public address, False for an internal one, None when `text` is not an IP address."""
    address = text.strip()
    family = _AF_INET6 if ":" in address else _AF_INET
    try:
        packed = _inet_pton(family, address)
        canonical = _inet_ntop(family, packed) == address
    except (OSError, ValueError):
        return _slow(address)
    if not canonical:
        return _slow(address)
    if family == _AF_INET6:
        if packed[:12] != _MAPPED:
            if _NARROW_V6 is None:
                return _slow(address)
            return _by_prefix(packed, _V6_LEVELS, _NARROW_V6, _V6_PREFIXES, address)
        packed = packed[12:]  # judged by its IPv4 address
    if _NARROW_V4 is None:
        return _slow(address)
    return _by_prefix(packed, _V4_LEVELS, _NARROW_V4, _V4_PREFIXES, address)

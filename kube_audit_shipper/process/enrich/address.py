"""Is a source IP public (reachable from the internet), or internal to some network?

Not public: private (RFC 1918, IPv6 unique-local fc00::/7 and the other IANA special-purpose "private" blocks),
loopback, link-local, CGNAT shared space (100.64.0.0/10, what many cloud VPCs and Kubernetes pod networks use),
unspecified, multicast and reserved addresses. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are judged by
their IPv4 address. An unparseable value gives None.
"""

from __future__ import annotations

import ipaddress

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")


def is_public_ip(text: str) -> bool | None:
    """True for a public address, False for an internal one, None when `text` is not an IP address."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            address = mapped
        elif address.scope_id:
            return False  # a zoned address is link-scoped by definition
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return False
    return not (address.is_private or address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast or address.is_reserved)

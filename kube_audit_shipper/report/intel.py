"""Seam: what the report asks of source-IP intelligence (country, ASN, risky-list flag).

The lookups themselves belong to detection (`kube_audit_shipper.process.detect`: an offline MaxMind-format
database and CIDR risk lists, the same data its alerts show), so the report does not open those files. It takes
any object with `lookup(address) -> IpInfo | None`; `commands/report.py` builds it from `--geoip`/`--risky`
(see `ip_intelligence` there). Only public addresses are looked up, each once.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class IpInfo(msgspec.Struct, kw_only=True, frozen=True):
    """What is known about one address; empty strings and None where the database has nothing."""

    country: str = ""  # ISO 3166 code, or a name
    city: str = ""
    asn: int | None = None
    as_org: str = ""
    risky: bool = False
    risk_source: str = ""  # which list flagged it (a file name)


class IpIntel(Protocol):
    def lookup(self, address: str) -> IpInfo | None:
        """What the databases know of `address`; None when nothing. Must not raise for any string."""
        ...

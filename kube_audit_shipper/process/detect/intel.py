"""Source IP intelligence, offline: where an address is (MaxMind-format databases) and whether a list calls it risky.

Geo: any number of MaxMind DB files (GeoLite2-City/-Country/-ASN, DB-IP Lite city/country/ASN: the same record
layout), read with the `maxminddb` library; their answers are merged into `{country, region, city, asn, as_org}`.
The agent never downloads them: the operator installs and updates the files (MaxMind's EULA, DB-IP's CC BY 4.0).

Risky: CIDR list files, one name per file (the file name without extension), in the formats the public lists
come in: FireHOL `.netset`/`.ipset` (one address or CIDR a line, `#` comments), Spamhaus DROP text
(`1.10.16.0/20 ; SBL256894`) and Spamhaus DROP JSON lines (`{"cidr": "1.10.16.0/20", ...}`, the metadata line
skipped). Lookups go through a small per-prefix-length hash, so a list of 100k networks costs at most 33 dict
look-ups per address (and answers are cached). Only public addresses are looked up: FireHOL level1 includes
the bogons, i.e. the private ranges every cluster uses.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
from collections.abc import Iterable
from typing import Any

_CACHE_SIZE = 8192


class IntelError(ValueError):
    """A database or list file that cannot be used; `problems` name the file and line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class CidrSet:
    """Networks (IPv4 and IPv6) each tagged with the name of the list it came from; `names_of(ip)` → names."""

    def __init__(self) -> None:
        # (version, prefix length) → {network address as int → names}
        self._tables: dict[tuple[int, int], dict[int, tuple[str, ...]]] = {}
        self._lengths: dict[int, list[int]] = {4: [], 6: []}
        self._rank: dict[str, int] = {}  # names in the order lists were added: answers come in that order
        self.count = 0

    def add(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, name: str) -> None:
        key = (network.version, network.prefixlen)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = {}
            self._lengths[network.version] = sorted({*self._lengths[network.version], network.prefixlen})
        self._rank.setdefault(name, len(self._rank))
        address = int(network.network_address)
        names = table.get(address, ())
        if name not in names:
            table[address] = (*names, name)
            self.count += 1

    def names_of(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, ...]:
        version = address.version
        bits = 32 if version == 4 else 128
        value = int(address)
        found: list[str] = []
        for length in self._lengths[version]:
            masked = (value >> (bits - length)) << (bits - length) if length else 0
            names = self._tables[(version, length)].get(masked)
            if names:
                found.extend(name for name in names if name not in found)
        return tuple(sorted(found, key=self._rank.__getitem__))


def read_cidr_list(path: str, into: CidrSet, problems: list[str], *, name: str | None = None) -> None:
    """Add every network of one list file to `into`; unreadable lines are reported as `path:line: ...`."""
    list_name = name or os.path.basename(path).split(".")[0] or path
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        problems.append(f"{path}: cannot read the CIDR list: {exc.strerror or exc}")
        return
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text[0] in "#;":
            continue
        if text.startswith("{"):
            try:
                record = json.loads(text)
            except ValueError:
                problems.append(f"{path}:{number}: not a JSON object: {text[:60]!r}")
                continue
            if not isinstance(record, dict) or record.get("type") == "metadata":
                continue
            text = str(record.get("cidr", ""))
        else:
            text = text.split(";", 1)[0].split("#", 1)[0].strip()
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            problems.append(f"{path}:{number}: not an IP address or CIDR: {text[:60]!r}")
            continue
        into.add(network, list_name)


class GeoDatabases:
    """MaxMind-format databases opened once; `lookup(ip)` merges what each one knows."""

    def __init__(self, paths: Iterable[str]) -> None:
        problems: list[str] = []
        self._readers: list[Any] = []
        paths = list(paths)
        if paths:
            try:
                import maxminddb
            except ImportError:
                raise IntelError(["geoip: the maxminddb library is not installed (pip install maxminddb)"]) from None
            for path in paths:
                try:
                    self._readers.append(maxminddb.open_database(path))
                except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
                    problems.append(f"{path}: cannot open the MaxMind DB: {exc}")
        if problems:
            self.close()
            raise IntelError(problems)

    def lookup(self, address: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for reader in self._readers:
            try:
                record = reader.get(address)
            except (ValueError, RuntimeError):  # an IPv6 address in an IPv4-only database; a damaged database
                continue
            if isinstance(record, dict):
                _merge_record(record, out)
        return out

    def close(self) -> None:
        for reader in self._readers:
            reader.close()
        self._readers = []


def _name(node: Any) -> str | None:
    if isinstance(node, dict):
        names = node.get("names")
        if isinstance(names, dict):
            value = names.get("en") or next(iter(names.values()), None)
            return value if isinstance(value, str) else None
    return None


def _merge_record(record: dict[str, Any], out: dict[str, Any]) -> None:
    country = record.get("country") or record.get("registered_country")
    if isinstance(country, dict) and "country" not in out:
        code = country.get("iso_code")
        if isinstance(code, str):
            out["country"] = code
        name = _name(country)
        if name:
            out["country_name"] = name
    subdivisions = record.get("subdivisions")
    if isinstance(subdivisions, list) and subdivisions and "region" not in out:
        region = _name(subdivisions[0])
        if region:
            out["region"] = region
    city = _name(record.get("city"))
    if city and "city" not in out:
        out["city"] = city
    asn = record.get("autonomous_system_number")
    if isinstance(asn, int) and "asn" not in out:
        out["asn"] = asn
    org = record.get("autonomous_system_organization")
    if isinstance(org, str) and "as_org" not in out:
        out["as_org"] = org


class SourceIntel:
    """What the configured databases and lists say about a source address (answers cached per address)."""

    def __init__(self, geoip_paths: Iterable[str] = (), risky_paths: Iterable[str] = ()) -> None:
        problems: list[str] = []
        self.risky = CidrSet()
        for path in risky_paths:
            read_cidr_list(path, self.risky, problems)
        try:
            self.geo = GeoDatabases(geoip_paths)
        except IntelError as exc:
            problems.extend(exc.problems)
        if problems:
            raise IntelError(problems)
        self.geo_enabled = bool(self.geo._readers)
        self.risky_enabled = self.risky.count > 0
        self.geo_of = functools.lru_cache(maxsize=_CACHE_SIZE)(self._geo_of)
        self.risky_of = functools.lru_cache(maxsize=_CACHE_SIZE)(self._risky_of)

    def _geo_of(self, address: str) -> dict[str, Any] | None:
        if not self.geo_enabled:
            return None
        return self.geo.lookup(address.strip()) or None

    def _risky_of(self, address: str) -> tuple[str, ...]:
        if not self.risky_enabled:
            return ()
        try:
            parsed = ipaddress.ip_address(address.strip())
        except ValueError:
            return ()
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        return self.risky.names_of(parsed)

    def close(self) -> None:
        self.geo.close()

"""Source IP intelligence from files: a MaxMind-format database the test writes itself (see mmdb_writer) and CIDR
lists in FireHOL and Spamhaus DROP (text and JSON) formats; both end up in alert fields."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from kube_audit_shipper.process.detect.build import RulesError, build_engine
from kube_audit_shipper.process.detect.config import DetectConfig
from kube_audit_shipper.process.detect.intel import CidrSet, SourceIntel, read_cidr_list
from tests.unit.process.detect.audit_events import line
from tests.unit.process.detect.mmdb_writer import write_mmdb

LONDON = {
    "country": {"iso_code": "GB", "names": {"en": "United Kingdom", "de": "Vereinigtes Königreich"}},
    "subdivisions": [{"names": {"en": "England"}}],
    "city": {"names": {"en": "London"}},
}
ASN = {"autonomous_system_number": 20712, "autonomous_system_organization": "Andrews & Arnold Ltd"}


@pytest.fixture
def databases(tmp_path: Path) -> list[str]:
    city = tmp_path / "city.mmdb"
    asn = tmp_path / "asn.mmdb"
    write_mmdb(str(city), {"81.2.69.0/24": LONDON, "2a02:8010::/32": {"country": {"iso_code": "GB"}}}, database_type="GeoLite2-City")
    write_mmdb(str(asn), {"81.2.64.0/18": ASN}, database_type="GeoLite2-ASN")
    return [str(city), str(asn)]


@pytest.fixture
def lists(tmp_path: Path) -> list[str]:
    firehol = tmp_path / "firehol_level1.netset"
    firehol.write_text("#\n# firehol_level1\n#\n10.0.0.0/8\n81.2.69.128/25\n185.220.101.1\n")
    drop = tmp_path / "drop.txt"
    drop.write_text("; Spamhaus DROP List\n1.10.16.0/20 ; SBL256894\n81.2.69.0/24 ; SBL000001\n")
    drop_json = tmp_path / "drop_v6.json"
    drop_json.write_text('{"cidr":"2a02:8010:1::/48","sblid":"SBL1","rir":"ripencc"}\n{"type":"metadata","timestamp":1,"size":1,"records":1}\n')
    return [str(firehol), str(drop), str(drop_json)]


def test_geo_lookup_merges_databases(databases: list[str]):
    intel = SourceIntel(databases)
    assert intel.geo_of("81.2.69.160") == {
        "country": "GB",
        "country_name": "United Kingdom",
        "region": "England",
        "city": "London",
        "asn": 20712,
        "as_org": "Andrews & Arnold Ltd",
    }
    assert intel.geo_of("81.2.70.1") == {"asn": 20712, "as_org": "Andrews & Arnold Ltd"}
    assert intel.geo_of("2a02:8010::1") == {"country": "GB"}
    assert intel.geo_of("8.8.8.8") is None
    intel.close()


def test_risky_lists_in_every_format(lists: list[str]):
    intel = SourceIntel(risky_paths=lists)
    assert intel.risky_of("81.2.69.200") == ("firehol_level1", "drop")
    assert intel.risky_of("81.2.69.10") == ("drop",)
    assert intel.risky_of("185.220.101.1") == ("firehol_level1",)
    assert intel.risky_of("2a02:8010:1::5") == ("drop_v6",)
    assert intel.risky_of("::ffff:185.220.101.1") == ("firehol_level1",)
    assert intel.risky_of("9.9.9.9") == ()
    assert intel.risky_of("not an ip") == ()


def test_cidr_set_matches_every_prefix_length():
    cidrs = CidrSet()
    for text in ["0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32", "::/0"]:
        cidrs.add(ipaddress.ip_network(text), text)
    assert cidrs.names_of(ipaddress.ip_address("10.1.2.3")) == ("0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32")
    assert cidrs.names_of(ipaddress.ip_address("11.0.0.1")) == ("0.0.0.0/0",)


def test_bad_files_are_reported_with_file_and_line(tmp_path: Path):
    bad = tmp_path / "bad.netset"
    bad.write_text("1.2.3.0/24\nnot-a-network\n{broken json\n")
    problems: list[str] = []
    read_cidr_list(str(bad), CidrSet(), problems)
    assert problems == [f"{bad}:2: not an IP address or CIDR: 'not-a-network'", f"{bad}:3: not a JSON object: '{{broken json'"]
    notdb = tmp_path / "not.mmdb"
    notdb.write_bytes(b"this is not a database")
    with pytest.raises(RulesError) as caught:
        build_engine(DetectConfig(geoip=[str(notdb), str(tmp_path / "missing.mmdb")], risky_cidrs=[str(bad)]))
    text = "\n".join(caught.value.problems)
    assert f"detect: {bad}:2" in text and f"detect: {notdb}: cannot open the MaxMind DB" in text and "missing.mmdb: cannot open" in text


def test_alerts_carry_geo_and_risk_for_public_sources(databases: list[str], lists: list[str]):
    engine, _ = build_engine(DetectConfig(geoip=databases, risky_cidrs=lists))
    anonymous = ("system:anonymous", ["system:unauthenticated"])
    alerts = [
        alert
        for second in range(10)
        for alert in engine.evaluate_line(line("get", "secrets", code=403, source_ip="81.2.69.200", user=anonymous, time=f"2026-11-22T10:00:{second:02d}Z"))
    ]
    (alert,) = [alert for alert in alerts if alert.rule == "public-access-failures"]
    assert alert.fields["source_geo"]["city"] == "London" and alert.fields["source_geo"]["asn"] == 20712
    assert alert.fields["source_risky"] is True and alert.fields["source_risky_lists"] == ["firehol_level1", "drop"]
    (exec_alert,) = engine.evaluate_line(line("create", "pods", namespace="default", name="w", subresource="exec", query="command=id", source_ip="9.9.9.9"))
    assert exec_alert.fields["source_risky"] is False and "source_geo" not in exec_alert.fields
    (private,) = engine.evaluate_line(line("create", "pods", namespace="default", name="w", subresource="exec", query="command=id", source_ip="10.1.1.1"))
    assert "source_risky" not in private.fields and "source_geo" not in private.fields  # private addresses are not looked up


def test_rules_can_match_on_geo_and_risk(tmp_path: Path, databases: list[str], lists: list[str]):
    rules = tmp_path / "geo.yaml"
    rules.write_text(
        """
rules:
  - id: exec-from-abroad
    severity: high
    match:
      and:
        - {field: objectRef.subresource, equals: exec}
        - or: [{field: "@geo.country", in: [GB]}, {field: "@risky", exists: true}]
    fields: {country: "@geo.country", lists: "@risky"}
"""
    )
    engine, _ = build_engine(DetectConfig(builtin_rules=False, rule_files=[str(rules)], geoip=databases, risky_cidrs=lists))
    (alert,) = engine.evaluate_line(line("create", "pods", namespace="default", name="w", subresource="exec", source_ip="81.2.69.200"))
    assert alert.fields["country"] == "GB" and alert.fields["lists"] == ["firehol_level1", "drop"]
    assert engine.evaluate_line(line("create", "pods", namespace="default", name="w", subresource="exec", source_ip="9.9.9.9")) == []

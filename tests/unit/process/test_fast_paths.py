"""Differential tests of the per-event fast paths (issue 17): each gives exactly what the general code gives.

Every fast path of the enrich, policy and detect packages is checked against an oracle: the general code it
short-cuts (`ipaddress`, the timestamp parser, `Enricher.derive`, a query split on every parameter, a condition
read through its getter), or, where the fast path replaced code, that code as it was before (kept here as the
oracle). Inputs: the benchmark's four input mixes (tests/bench/mixes.py: generated, large identity and address
populations, small Metadata events, the real events of tests/data/real-audit), hand-picked edge cases, and
Hypothesis-generated values (deterministic).
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from datetime import timedelta
from typing import Any
from urllib.parse import unquote_plus

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import Raw

from kube_audit_shipper.jsonscan import array_items, object_members
from kube_audit_shipper.process.detect.conditions import compile_leaf
from kube_audit_shipper.process.detect.context import Env, EventContext
from kube_audit_shipper.process.detect.getters import compile_getter
from kube_audit_shipper.process.detect.paths import parse_path
from kube_audit_shipper.process.detect.spec import Leaf
from kube_audit_shipper.process.enrich.address import is_public_ip
from kube_audit_shipper.process.enrich.config import ALL_DERIVED_FIELDS, DerivedConfig, EnrichConfig, RedactConfig
from kube_audit_shipper.process.enrich.fields import Enricher
from kube_audit_shipper.process.enrich.redact import Redactor
from kube_audit_shipper.process.enrich.timestamps import latency_ms, parse_timestamp
from kube_audit_shipper.process.policy.event import decode_event
from kube_audit_shipper.process.policy.trim import strip_managed_fields
from tests.bench.mixes import MIXES, mix_lines

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=300)
EVENTS_PER_MIX = 4000


def mix_events(mix: str, n: int = EVENTS_PER_MIX) -> list[bytes]:
    return list(itertools.islice(mix_lines(mix, 7), n))


@pytest.fixture(scope="module")
def all_lines() -> list[bytes]:
    return [line for mix in MIXES for line in mix_events(mix)]


# ---- source address: inet_pton + prefix memo vs ipaddress ------------------------------------------------------


def ipaddress_public(text: str) -> bool | None:
    """The definition (the implementation before the fast path)."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            address = mapped
        elif address.scope_id:
            return False
    if isinstance(address, ipaddress.IPv4Address) and address in ipaddress.IPv4Network("100.64.0.0/10"):
        return False
    return not (address.is_private or address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast or address.is_reserved)


def special_network_addresses() -> list[str]:
    """Both ends of every network ipaddress judges by (and their neighbours), and addresses inside each."""
    rng = random.Random(3)
    networks: list[Any] = [ipaddress.ip_network("100.64.0.0/10")]
    for constants in (getattr(ipaddress, "_IPv4Constants", None), getattr(ipaddress, "_IPv6Constants", None)):
        for value in vars(constants).values() if constants is not None else ():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                    networks.append(item)
    out = []
    for network in networks:
        for edge in (network.network_address, network.broadcast_address):
            for step in (-1, 0, 1):
                try:
                    out.append(str(edge + step))
                except ipaddress.AddressValueError:
                    pass
        out += [str(network.network_address + rng.randrange(network.num_addresses)) for _ in range(50)]
    return out


ODD_ADDRESSES = [
    "",
    " ",
    "1.2.3.4 ",
    " 10.0.0.1",
    "01.2.3.4",
    "1.2.3.256",
    "1.2.3",
    "1.2.3.4.5",
    "::1",
    "::",
    "fe80::1%eth0",
    "2A01:4F8::1",
    "2a01:04f8::1",
    "::FFFF:8.8.8.8",
    "::ffff:10.0.0.1",
    "::ffff:01.2.3.4",
    "::1.2.3.4",
    "::ffff:0:1.2.3.4",
    "64:ff9b::1.2.3.4",
    "abc",
    "٠.1.1.1",
    "1.2.3.4\x00",
    "192.0.0.9",
    "192.0.0.170",
    "255.255.255.255",
    "0.0.0.0",
    "100.63.255.255",
    "100.64.0.0",
    "100.127.255.255",
    "100.128.0.0",
    "2001:db8::1",
    "2001:1::1",
    "2002::1",
    "fd00::1",
    "ff02::1",
]


def test_source_address_matches_ipaddress_on_special_networks_and_odd_text() -> None:
    for text in special_network_addresses() + ODD_ADDRESSES:
        assert is_public_ip(text) == ipaddress_public(text), text


def test_source_address_matches_ipaddress_on_the_mixes(all_lines: list[bytes]) -> None:
    seen = 0
    for line in all_lines:
        addresses = decode_event(line).view.sourceIPs
        for text in addresses or ():
            assert is_public_ip(text) == ipaddress_public(text), text
            seen += 1
    assert seen > 10_000


@FUZZ
@given(
    st.one_of(
        st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
        st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
        st.integers(0, 2**32 - 1).map(lambda n: "::ffff:" + str(ipaddress.IPv4Address(n))),
        st.text(alphabet="0123456789abcdefABCDEF:.% ", max_size=45),
    )
)
def test_source_address_matches_ipaddress_on_any_address(text: str) -> None:
    assert is_public_ip(text) == ipaddress_public(text)


# ---- latency: fixed-format fast path vs the parser ----------------------------------------------------------------


def previous_latency(received: str | None, stage: str | None) -> float | None:
    """latency_ms before the fixed-format path for stamps of different minutes (the oracle)."""
    if not received or not stage:
        return None
    if (
        len(received) == len(stage)
        and received[-1] == "Z" == stage[-1]
        and stage.startswith(received[:17])
        and received[16] == ":"
        and received[10] == "T"
        and received[4] == "-"
    ):
        try:
            start_s, end_s = float(received[17:-1]), float(stage[17:-1])
        except ValueError:
            pass
        else:
            if 0.0 <= start_s < 61.0 and 0.0 <= end_s < 61.0:
                return round((end_s - start_s) * 1e6) / 1000
    start, end = parse_timestamp(received), parse_timestamp(stage)
    if start is None or end is None:
        return None
    try:
        return ((end - start) // timedelta(microseconds=1)) / 1000
    except OverflowError:
        return None


STAMPS = [
    "2026-11-22T10:00:00.000000Z",
    "2026-11-22T10:00:59.999999Z",
    "2026-11-22T10:01:00.000001Z",
    "2026-11-22T23:59:59.999999Z",
    "2026-11-23T00:00:00.000000Z",
    "2026-12-31T23:59:59.000000Z",
    "2027-01-01T00:00:00.000000Z",
    "2024-02-29T12:00:00.000000Z",
    "2023-02-29T12:00:00.000000Z",  # no such day
    "2026-13-01T00:00:00.000000Z",  # no such month
    "2026-11-22T24:00:00.000000Z",
    "2026-11-22T10:60:00.000000Z",
    "2026-11-22T10:00:60.000000Z",
    "2026-11-22T10:00:61.000000Z",
    "0000-01-01T00:00:00.000000Z",
    "0001-01-01T00:00:00.000000Z",
    "9999-12-31T23:59:59.999999Z",
    "2026-11-22T10:00:0٥.000000Z",  # a non-ASCII digit
    "2026-11-22T10:00:00.00000Z",
    "2026-11-22T10:00:00.0000000Z",
    "2026-11-22 10:00:00.000000Z",
    "2026-11-22T10:00:00.000000+01:00",
    "2026-11-22T10:00:00Z",
    "2026-11-22T10:00:9e9999999Z",
    "2026-11-22T10:00:1_0.00000Z",
]


def test_latency_matches_the_parser_on_every_pair_of_stamps() -> None:
    for received, stage in itertools.product(STAMPS, repeat=2):
        assert latency_ms(received, stage) == previous_latency(received, stage), (received, stage)


def test_latency_matches_the_parser_on_the_mixes(all_lines: list[bytes]) -> None:
    for line in all_lines:
        view = decode_event(line).view
        received, stage = view.requestReceivedTimestamp or None, view.stageTimestamp or None
        assert latency_ms(received, stage) == previous_latency(received, stage), (received, stage)


@FUZZ
@given(st.datetimes(), st.integers(0, 10**12), st.booleans())
def test_latency_matches_the_parser_on_any_apiserver_stamps(start: Any, delta_us: int, backwards: bool) -> None:
    end = start - timedelta(microseconds=delta_us) if backwards and start.year > 1 else start + timedelta(microseconds=delta_us)
    try:
        received, stage = start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), end.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return
    if len(received) != 27 or len(stage) != 27:
        return
    assert latency_ms(received, stage) == previous_latency(received, stage)


# ---- enrichment: memoised members vs the encoded derive --------------------------------------------------------


def encoded_derive(enricher: Enricher, event: Any) -> bytes:
    """What `members` gave before: the static members and derive's dict, encoded in one go."""
    derived = enricher.derive(event)
    if not enricher._derived or not derived:
        return enricher._static
    return b"".join((enricher._static_prefix, enricher._derived_key, msgspec.json.encode(derived)))


ODD_EVENTS = [
    {"kind": "Event"},
    {"user": {}, "sourceIPs": []},
    {"user": {"username": "system:anonymous"}, "sourceIPs": ["not-an-ip"]},
    {"user": {"username": "x", "groups": ["system:unauthenticated"]}},
    {"user": {"username": "kubelet", "groups": ["system:nodes"]}, "sourceIPs": ["::ffff:10.1.2.3", "8.8.8.8"]},
    {"user": {"groups": ["devs"]}, "impersonatedUser": {"username": "bob"}},
    {"user": {"username": "kubernetes-admin"}, "annotations": {"authorization.k8s.io/reason": 'RBAC: ... to User "alice"'}},
    {"user": {"username": "kubernetes-admin"}, "impersonatedUser": {}, "annotations": {"authorization.k8s.io/reason": 'to User "carol"'}},
    {"user": {"username": "kubernetes-admin"}},
    {"user": {"username": 5}, "sourceIPs": [1, "10.0.0.1"]},
    {"responseStatus": {"code": 0}},
    {"responseStatus": {"code": 399}},
    {"responseStatus": {"code": 400}},
    {"responseStatus": {"code": True}},
    {"responseStatus": {"code": 10**30}},
    {"requestURI": "/api/v1/namespaces/ns/pods/p/exec?command=sh&container=c"},
    {"requestURI": "/api/v1/namespaces/ns/pods/p/portforward?ports=80&ports=443", "objectRef": {"resource": "pods", "subresource": "portforward"}},
    {"requestURI": "/api/v1/pods/x", "objectRef": {"resource": "pods", "subresource": "exec", "apiGroup": "odd"}},
    {"requestReceivedTimestamp": "2026-11-22T10:00:00.000000Z", "stageTimestamp": "2026-11-22T10:05:00.500000Z"},
    {"requestReceivedTimestamp": "2026-11-22T10:00:00.000000Z", "stageTimestamp": "2026-11-22 10:00:00.5"},
]


@pytest.mark.parametrize(
    "config",
    [
        EnrichConfig(),
        EnrichConfig(static_fields={"cluster_id": "c-1", "weight": 2}, node_field=""),
        EnrichConfig(derived=DerivedConfig(field="sec", include=("user_kind", "latency_ms"), shared_admin_users=())),
        EnrichConfig(derived=DerivedConfig(include=("source_ip_public", "effective_user", "pod_session"))),
        EnrichConfig(derived=DerivedConfig(enabled=False)),
        *(EnrichConfig(derived=DerivedConfig(include=(field,))) for field in ALL_DERIVED_FIELDS),
    ],
    ids=lambda c: ",".join(c.derived.include) if c.derived.enabled else "no-derived",
)
def test_members_are_the_encoded_derive(config: EnrichConfig, all_lines: list[bytes]) -> None:
    enricher = Enricher(config, "node-1")
    odd = [msgspec.json.encode(fields) for fields in ODD_EVENTS]
    for line in [*all_lines, *odd, *all_lines[:2000]]:  # the repeat runs on warm memos
        event = decode_event(line)
        assert enricher.members(event) == encoded_derive(enricher, event), line[:300]


def test_member_memos_are_bounded(all_lines: list[bytes]) -> None:
    enricher = Enricher(EnrichConfig(), "n")
    for line in all_lines:
        enricher.members(decode_event(line))
    for memo in (enricher._address_parts, enricher._identity_parts, enricher._outcome_parts):
        assert 0 < len(memo) <= 8192


# ---- redaction: the query prefilter vs splitting every query ---------------------------------------------------


def split_every_query(redactor: Redactor, uri: str) -> str:
    """redact_uri without its prefilter: every parameter is decoded and compared."""
    path, _, query = uri.partition("?")
    parts = query.split("&")
    changed = False
    for index, part in enumerate(parts):
        name, equals, value = part.partition("=")
        if equals and unquote_plus(name).lower() in redactor._query_params:
            parts[index] = name + "=" + "MASKED"
            changed = True
    return path + "?" + "&".join(parts) if changed else uri


def masks(redactor: Redactor, uri: str) -> bool:
    return redactor.redact_uri(uri) != uri


QUERIES = [
    "timeout=10s",
    "token=abc",
    "TOKEN=abc",
    "x=1&Token=2",
    "x=1&to\u212aen=2",  # KELVIN SIGN: lowercases to k
    "x=1&\u0130d_token=2",  # İ: lowercases to two characters
    "a%74oken=1",
    "%74oken=1",
    "t%6Fken=1",
    "to+ken=1",
    "access_token=&x=1",
    "token",
    "x=token=1",
    "x=1&&token=2",
    "watch=true&fieldSelector=metadata.name%3Dtoken%3D1",
    "labelSelector=%21service.kubernetes.io%2Fheadless&token=1",
    "command=sh&command=-c&command=cat%20%2Fvar%2Frun%2Ftoken&container=app",
    "client_secret=s&password=p&api_key=k&apikey=k2&refresh_token=r&id_token=i",
    "my_token=1&tokens=2&xtoken=3",
    "a=1?token=2",
    "=token&token",
]


def test_query_prefilter_skips_only_what_needs_no_mask(all_lines: list[bytes]) -> None:
    for config in (RedactConfig(), RedactConfig(query_params=("X-Secret", "sig")), RedactConfig(default_rules=False, query_params=("sig",))):
        redactor = Redactor(config)
        uris = [f"/api/v1/namespaces/ns/pods?{q}" for q in QUERIES] + [decode_event(line).view.requestURI or "" for line in all_lines]
        for uri in uris:
            if "?" in uri:
                assert masks(redactor, uri) == (split_every_query(redactor, uri) != uri), uri


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["token", "TOKEN", "t%6Fken", "to+ken", "x", "access_token", "%", "+", "a=b", ""]), st.text(max_size=6)), max_size=6))
def test_query_prefilter_on_any_query(params: list[tuple[str, str]]) -> None:
    redactor = Redactor(RedactConfig())
    uri = "/api/v1/pods?" + "&".join(f"{name}={value}" for name, value in params)
    assert masks(redactor, uri) == (split_every_query(redactor, uri) != uri)


def test_redaction_of_a_matching_event_is_unchanged_by_the_resource_filter() -> None:
    redactor = Redactor(RedactConfig())
    body = b'{"kind":"Secret","data":{"password":"c2VjcmV0"}}'
    line = msgspec.json.encode({"verb": "create", "objectRef": {"resource": "secrets", "namespace": "ns"}, "requestObject": Raw(body)})
    event = decode_event(line)
    redactor.apply(event)
    assert event.get("requestObject") == Raw(b'{"kind":"Secret","data":{"password":"***"}}')
    pods = decode_event(msgspec.json.encode({"verb": "create", "objectRef": {"resource": "pods"}, "requestObject": Raw(body)}))
    redactor.apply(pods)
    assert bytes(pods.get("requestObject") or b"") == body


# ---- managedFields: one encode per body vs one per level (the previous implementation) -------------------------

_ENCODER = msgspec.json.Encoder()


def previous_strip(body: Raw | bytes) -> Raw | None:
    """strip_managed_fields as it was before (the oracle)."""
    data = bytes(body)
    if b"managedFields" not in data:
        return None
    top = object_members(data)
    if top is None:
        return None
    changed = _previous_strip_metadata(top)
    items = top.get("items")
    if items is not None:
        changed |= _previous_each(top, "items", items, _previous_strip_metadata)
    rows, kind = top.get("rows"), top.get("kind")
    if rows is not None and kind is not None and bytes(kind) == b'"Table"':
        changed |= _previous_each(top, "rows", rows, _previous_row)
    return Raw(_ENCODER.encode(top)) if changed else None


def _previous_strip_metadata(obj: dict[str, Raw]) -> bool:
    metadata = obj.get("metadata")
    if metadata is None or b"managedFields" not in bytes(metadata):
        return False
    fields = object_members(metadata)
    if fields is None or fields.pop("managedFields", None) is None:
        return False
    obj["metadata"] = Raw(_ENCODER.encode(fields))
    return True


def _previous_row(row: dict[str, Raw]) -> bool:
    embedded = row.get("object")
    if embedded is None:
        return False
    stripped = previous_strip(embedded)
    if stripped is None:
        return False
    row["object"] = stripped
    return True


def _previous_each(container: dict[str, Raw], key: str, raw_array: Raw, strip: Any) -> bool:
    data = bytes(raw_array)
    if b"managedFields" not in data:
        return False
    elements = array_items(data)
    if elements is None:
        return False
    changed = False
    for index, element in enumerate(elements):
        element_bytes = bytes(element)
        if b"managedFields" not in element_bytes:
            continue
        obj = object_members(element_bytes)
        if obj is not None and strip(obj):
            elements[index] = Raw(_ENCODER.encode(obj))
            changed = True
    if changed:
        container[key] = Raw(_ENCODER.encode(elements))
    return changed


def outcome(strip: Any, body: Raw | bytes) -> object:
    """What a strip gives: the bytes, None, or the exception type it raised."""
    try:
        result = strip(body)
    except Exception as exc:  # compared, not hidden
        return type(exc)
    return None if result is None else bytes(result)


def same(body: Raw | bytes) -> bool:
    return outcome(strip_managed_fields, body) == outcome(previous_strip, body)


MANAGED = b'"managedFields":[{"manager":"m","operation":"Update"}]'
NOT_JSON = b'{"metadata":{' + MANAGED + b",}}"  # both raise
BODIES = [
    b'{"metadata":{"name":"a",' + MANAGED + b"}}",
    b'{ "metadata" : { "name" : "a" , ' + MANAGED + b' } , "spec" : { "x" : [ 1 , 2 ] } }',
    b'{"kind":"PodList","items":[{"metadata":{' + MANAGED + b'}},{"metadata":{"name":"b"}}, {"metadata" :{"n":1,' + MANAGED + b"}}]}",
    b'{"kind":"Table","rows":[{"cells":[1],"object":{"metadata":{'
    + MANAGED
    + b'}}},{"object":{"kind":"Table","rows":[{"object":{"metadata":{'
    + MANAGED
    + b"}}}]}}]}",
    b'{"kind":"List","items":[1,"x",null,[{' + MANAGED + b"}],{}]}",
    NOT_JSON,
    b'{"metadata":{"annotations":{"x":"managedFields"}}}',
    b'{"meta\\u0064ata":{' + MANAGED + b"}}",
    b'[{"metadata":{' + MANAGED + b"}}]",
    b'"managedFields"',
    b'{"metadata":null,"items":null,"rows":[],"kind":"Table"}',
]


def test_strip_matches_the_previous_implementation_on_hand_made_bodies() -> None:
    for body in BODIES:
        assert same(body), body
        assert same(Raw(body)), body
    assert outcome(strip_managed_fields, NOT_JSON) is msgspec.DecodeError


def test_strip_matches_the_previous_implementation_on_the_mixes(all_lines: list[bytes]) -> None:
    stripped = 0
    for line in all_lines:
        event = decode_event(line)
        for name in ("requestObject", "responseObject"):
            raw = event.get(name)
            if raw is not None:
                assert same(raw)
                stripped += strip_managed_fields(raw) is not None
    assert stripped > 50


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["metadata", "items", "rows", "object", "kind", "managedFields", "x"]), inner, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(json_values)
def test_strip_matches_the_previous_implementation_on_any_json(value: Any) -> None:
    assert same(msgspec.json.encode(value))


# ---- detection: string head leaves read inline vs through their getter -----------------------------------------

HEAD_PATHS = ["verb", "stage", "requestURI", "objectRef.resource", "objectRef.subresource", "objectRef.namespace", "user.username", "impersonatedUser.username"]


def test_head_leaves_match_the_getter_on_the_mixes(all_lines: list[bytes]) -> None:
    env = Env()
    events = [decode_event(line) for line in all_lines[::7]] + [decode_event(msgspec.json.encode(fields)) for fields in ODD_EVENTS]
    for path in HEAD_PATHS:
        get = compile_getter(parse_path(path))
        values = sorted({v for e in events if type(v := get(EventContext(e, env))) is str})[:20] + ["", "nothing-like-it"]
        for value in values:
            equals = compile_leaf(Leaf(path=path, ops=(("equals", value),)))
            member = compile_leaf(Leaf(path=path, ops=(("in", (value, "other")),)))
            for event in events:
                ctx = EventContext(event, env)
                found = get(ctx)
                assert equals(ctx) == (type(found) is str and found == value), (path, value)
                assert member(ctx) == (type(found) is str and found in (value, "other")), (path, value)


# ---- policy: the memoised decision (one-group key) vs evaluating every request ---------------------------------


def test_decisions_match_uncached_evaluation(all_lines: list[bytes]) -> None:
    from kube_audit_shipper.errors import PolicyError
    from kube_audit_shipper.process.policy.attributes import request_attributes
    from kube_audit_shipper.process.policy.load import load_policy
    from kube_audit_shipper.process.policy.match import DecisionCache
    from tests.support.corpus import POLICIES, REPO, corpus_lines

    files = [REPO / "config" / "policy" / "audit-policy.yaml", *sorted(POLICIES.glob("*.yaml"))]
    one_group = loaded = 0
    for path in files:
        try:
            policy, _ = load_policy(str(path))
        except PolicyError:  # a fixture of an invalid policy
            continue
        loaded += 1
        cache = DecisionCache(policy, 64)  # small: entries are evicted and recomputed too
        one_group += cache._only_group is not None
        for line in [*all_lines, *corpus_lines()]:
            event = decode_event(line)
            expected = policy.evaluate(request_attributes(event))
            assert cache.evaluate_event(event) == expected, (path.name, line[:200])
    assert one_group and loaded - one_group >= 1  # both keys: one group, several groups

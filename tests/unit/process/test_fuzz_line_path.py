"""Property test: no input line escapes the per-line path or a sink's encoder, and every line is accounted for.

Hypothesis throws batches of lines at the real path the reader thread runs (`LineReader` → `LineProcessor` with
the transform the agent builds: a policy with omitManagedFields and drops, redaction, enrichment), then hands
the shipped records to every sink's `encode` (file, SLS, Loki protobuf and JSON, S3). Lines are arbitrary
bytes, arbitrary JSON (built as bytes: nesting up to and past Python's recursion limit, huge and out-of-range
numbers, odd escapes and strings, duplicate keys, odd whitespace) and audit events with odd or wrongly typed
values at every known field. Checked: nothing raises; every line is shipped, dropped by the policy, blank or
dead-lettered; a line built as valid JSON is never dead-lettered; a shipped record is a JSON object;
a Secret's data never leaves unmasked; every record is in exactly one request of every sink.

Deterministic (`derandomize=True`, no example database) and bounded to well under a minute on the CI machine;
`KAS_FUZZ_EXAMPLES=5000` (examples per test, default 150) searches longer, still reproducibly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.jsonscan import check_object
from kube_audit_shipper.process.enrich.config import EnrichConfig, RedactConfig
from kube_audit_shipper.process.policy.load import parse_policy
from kube_audit_shipper.process.policy.match import compile_policy
from kube_audit_shipper.process.transform import build_transform
from kube_audit_shipper.sinks.registry import SINK_CONFIGS, build_sink, sink_context
from kube_audit_shipper.source.reader import LineReader
from tests.support.line_processing import ProcessingWithDeadLetters as LineProcessor

MiB = 1 << 20
RECURSION_LIMIT_DEPTH = 1000  # msgspec's nesting depth follows sys.getrecursionlimit()
SECRET = "U0VOVElORUwtc2VjcmV0LWRhdGE="  # never to be shipped: only ever put in a Secret's data

POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitManagedFields: true
omitStages: [RequestReceived]
rules:
  - level: None
    verbs: [watch]
  - level: Metadata
    resources: [{group: "", resources: [events]}]
  - level: Request
    resources: [{group: "", resources: [configmaps]}]
  - level: RequestResponse
"""
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=int(os.environ.get("KAS_FUZZ_EXAMPLES", "150")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# -- JSON as bytes: valid by construction ---------------------------------------------------------------------
ws = st.sampled_from([b"", b"", b"", b" ", b"\t", b"\r\n ", b"  "])
odd_numbers = st.sampled_from(
    [b"0", b"-0", b"1e400", b"-1e400", b"1e-400", b"1E+2", b"-0.0e-0", b"1.7976931348623157e308", b"9" * 4300, b"9" * 4301, b"-" + b"9" * 30]
)
numbers = st.one_of(
    odd_numbers,
    st.integers().map(lambda i: str(i).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
)


def _escaped(code_points: list[int]) -> bytes:
    return b'"' + b"".join(b"\\u%04x" % c for c in code_points) + b'"'


non_surrogate = st.integers(0, 0xFFFF).filter(lambda c: not 0xD800 <= c <= 0xDFFF)
pairs = st.tuples(st.integers(0xD800, 0xDBFF), st.integers(0xDC00, 0xDFFF)).map(list)
strings = st.one_of(
    st.text(max_size=40).map(msgspec.json.encode),
    st.lists(st.one_of(non_surrogate.map(lambda c: [c]), pairs), max_size=6).map(lambda groups: _escaped([c for g in groups for c in g])),
    st.sampled_from([b'""', b'"\\"\\\\\\/\\b\\f\\n\\r\\t"', b'"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"', b'"a\x7fb"', b'"{\\"x\\":[1]}"']),
)
timestamps = st.one_of(
    st.sampled_from(
        [
            "2024-05-01T10:00:00.250000Z",
            "2024-05-01T10:00:9e9999999Z",
            "2024-05-01T10:00:nan0000000Z",
            "2024-05-01T10:00:inf0000000Z",
            "2024-05-01T10:00:1_0.000000Z",
            "2024-05-01T10:00:00.250000+99:99",
            "2024-05-01T10:00:00-24:00",
            "0000-00-00T00:00:00Z",
            "0001-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59.999999999-23:59",
            "2024-13-45T25:61:61Z",
            "2024-05-01 10:00:00",
            "",
            "Z",
            "2024-05-01T10:00:00.1234567890123Z",
        ]
    ),
    st.tuples(
        st.integers(0, 9999),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
        st.sampled_from(["Z", "+00:00", "-23:59", "+99:99", "", "z"]),
    ).map(lambda t: "%04d-%02d-%02dT%02d:%02d:%02d.5%s" % t),
    st.text(max_size=30),
).map(msgspec.json.encode)
scalars = st.one_of(st.sampled_from([b"null", b"true", b"false"]), numbers, strings, timestamps)


def _object(members: list[tuple[bytes, bytes]], space: bytes) -> bytes:
    return b"{" + space + b",".join(k + space + b":" + space + v for k, v in members) + space + b"}"


def _array(items: list[bytes], space: bytes) -> bytes:
    return b"[" + space + (b"," + space).join(items) + space + b"]"


json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.builds(_array, st.lists(children, max_size=5), ws),
        # keys may repeat: duplicate keys are JSON, the last one wins
        st.builds(_object, st.lists(st.tuples(st.one_of(strings, st.sampled_from([b'"a"', b'"kind"', b'"data"'])), children), max_size=5), ws),
    ),
    max_leaves=20,
)


@st.composite
def deep_values(draw: st.DrawFn) -> bytes:
    """Nesting at, around and far past the depth msgspec can go, in every shape the scanner takes in runs."""
    depth = draw(st.one_of(st.integers(RECURSION_LIMIT_DEPTH - 30, RECURSION_LIMIT_DEPTH + 30), st.integers(0, 6000)))
    leaf = draw(st.one_of(scalars, st.sampled_from([b"[]", b"{}", b'{"managedFields":[{"manager":"m"}]}'])))
    shape = draw(st.sampled_from(["arrays", "objects", "mixed", "spaced", "items"]))
    if shape == "arrays":
        return b"[" * depth + leaf + b"]" * depth
    if shape == "objects":
        return b'{"a":' * depth + leaf + b"}" * depth
    if shape == "spaced":
        return b'[ { "k{" : ' * depth + leaf + b" } ]" * depth
    if shape == "items":
        return b'{"items":[1,' * depth + leaf + b"]}" * depth
    return b'[{"a":[' * (depth // 3) + leaf + b"]}]" * (depth // 3)


any_json = st.one_of(json_values, deep_values())

# -- audit events ---------------------------------------------------------------------------------------------
RESOURCES = ["secrets", "configmaps", "pods", "events", "serviceaccounts", "tokenreviews", "leases", ""]
SUBRESOURCES = ["", "exec", "attach", "portforward", "token", "status"]
URIS = [
    "/api/v1/namespaces/default/secrets/db",
    "/api/v1/namespaces/default/pods/web-0/exec?command=sh&command=-c&command=id%20-u&container=app&stdin=true",
    "/api/v1/namespaces/default/pods/web-0/portforward?ports=8080&ports=%zz",
    "/apis/apps/v1/namespaces/d/deployments?fieldSelector=metadata.name%3Dweb&watch=true",
    "/api/v1/namespaces/default/serviceaccounts/sa/token?token=abc&access_token=def&Password=x",
    "/apis/authentication.k8s.io/v1/tokenreviews",
    "/healthz?%%%=%&&==",
    "/api/v1/watch",
    "/apis/g/v",
    "/api//v1///namespaces",
    "",
]


def field(typed: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A field's value: mostly of its type, else any JSON at all (a wrong type) or a deep value."""
    return st.one_of(typed, typed, typed, json_values, deep_values())


def encoded(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return strategy.map(msgspec.json.encode)


user = encoded(
    st.fixed_dictionaries(
        {"username": st.sampled_from(["alice", "system:serviceaccount:ns:sa", "system:node:n1", "kubernetes-admin", "system:anonymous", ""])},
        optional={"groups": st.lists(st.sampled_from(["system:masters", "system:nodes", "dev"]), max_size=3), "uid": st.text(max_size=5)},
    )
)
object_ref = encoded(
    st.fixed_dictionaries(
        {"resource": st.sampled_from(RESOURCES)},
        optional={
            "subresource": st.sampled_from(SUBRESOURCES),
            "namespace": st.sampled_from(["default", "kube-system", ""]),
            "name": st.sampled_from(["db", "web-0", ""]),
            "apiGroup": st.sampled_from(["", "apps", "authentication.k8s.io"]),
            "apiVersion": st.sampled_from(["v1", "apps/v1", "authentication.k8s.io/v1"]),
        },
    )
)
managed = b'"managedFields":[{"manager":"kubectl","operation":"Update","fieldsV1":{"f:data":{}}}]'
bodies = st.one_of(
    st.builds(lambda v: b'{"kind":"ConfigMap","metadata":{"name":"x",' + managed + b'},"data":{"k":' + v + b"}}", any_json),
    st.builds(lambda v: b'{"kind":"List","items":[{"metadata":{' + managed + b"}}," + v + b"]}", any_json),
    st.builds(lambda v: b'{"kind":"Table","rows":[{"object":{"metadata":{' + managed + b'}}},{"object":' + v + b"}]}", any_json),
    st.builds(lambda v: b'[{"op":"add","path":"/data/k","value":' + v + b"}]", any_json),
    any_json,
)
EVENT_FIELDS: dict[str, st.SearchStrategy[bytes]] = {
    "kind": field(encoded(st.just("Event"))),
    "apiVersion": field(encoded(st.sampled_from(["audit.k8s.io/v1", "audit.k8s.io/v1beta1"]))),
    "level": field(encoded(st.sampled_from(["Metadata", "Request", "RequestResponse", "None", "Loud"]))),
    "auditID": field(encoded(st.uuids().map(str))),
    "stage": field(encoded(st.sampled_from(["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]))),
    "requestURI": field(encoded(st.one_of(st.sampled_from(URIS), st.text(max_size=40)))),
    "verb": field(encoded(st.sampled_from(["get", "list", "watch", "create", "update", "patch", "delete"]))),
    "user": field(user),
    "impersonatedUser": field(user),
    "sourceIPs": field(encoded(st.lists(st.sampled_from(["10.0.0.1", "203.0.113.9", "::ffff:10.1.1.1", "fe80::1%eth0", "not-an-ip", "1" * 300]), max_size=3))),
    "userAgent": field(encoded(st.text(max_size=20))),
    "objectRef": field(object_ref),
    "responseStatus": field(st.builds(lambda code: b'{"metadata":{},"code":' + code + b"}", numbers)),
    "requestObject": field(bodies),
    "responseObject": field(bodies),
    "requestReceivedTimestamp": field(timestamps),
    "stageTimestamp": field(timestamps),
    "annotations": field(
        encoded(st.dictionaries(st.sampled_from(["authorization.k8s.io/reason", "authorization.k8s.io/decision", "x"]), st.text(max_size=30)))
    ),
    "metadata": field(any_json),
    "extension": any_json,  # a field the Event does not know
}


@st.composite
def audit_events(draw: st.DrawFn) -> bytes:
    names = draw(st.lists(st.sampled_from(list(EVENT_FIELDS)), min_size=1, max_size=len(EVENT_FIELDS) + 3))  # repeats: duplicate keys
    members = [(msgspec.json.encode(name), draw(EVENT_FIELDS[name])) for name in names]
    return _object(members, draw(ws))


@st.composite
def secret_events(draw: st.DrawFn) -> bytes:
    """A Secret write whose body holds SECRET in `data`, with anything (deep, out of range, odd) beside it."""
    data = b'{"password":"' + SECRET.encode() + b'","other":' + draw(strings) + b"}"
    extra = draw(any_json)
    body = draw(
        st.sampled_from(
            [
                b'{"kind":"Secret","metadata":{"name":"db"},"data":' + data + b',"extra":' + extra + b"}",
                b'{"kind":"SecretList","items":[{"data":' + data + b"}," + extra + b"]}",
                b'[{"op":"replace","path":"/data","value":' + data + b'},{"op":"add","path":"/x","value":' + extra + b"}]",
                b'{"extra":' + extra + b',"data":' + data + b"}",
            ]
        )
    )
    verb = b'"patch"' if body.startswith(b"[") else draw(st.sampled_from([b'"create"', b'"update"']))
    ref = b'{"resource":"secrets","namespace":"default","name":"db","apiVersion":"v1"}'
    members = [
        (b'"kind"', b'"Event"'),
        (b'"level"', b'"RequestResponse"'),
        (b'"auditID"', msgspec.json.encode(str(draw(st.uuids())))),
        (b'"stage"', b'"ResponseComplete"'),
        (b'"verb"', verb),
        (b'"user"', draw(field(user))),
        (b'"objectRef"', ref),
        (draw(st.sampled_from([b'"requestObject"', b'"responseObject"'])), body),
        (b'"stageTimestamp"', draw(timestamps)),
    ]
    return _object(members, draw(ws))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """An event cut short, with bytes flipped or inserted: anything at all, usually not JSON."""
    line = bytearray(draw(st.one_of(audit_events(), secret_events())))
    for _ in range(draw(st.integers(1, 4))):
        if not line:
            break
        at = draw(st.integers(0, len(line) - 1))
        action = draw(st.sampled_from(["cut", "flip", "insert"]))
        if action == "cut":
            del line[at:]
        elif action == "flip":
            line[at] = draw(st.integers(0, 255))
        else:
            line[at:at] = draw(st.sampled_from([b"{", b"[", b'"', b"\\", b",", b":", b"\xff", b"\xed\xa0\x80", b"\\ud800"]))
    return bytes(line)


raw_bytes = st.binary(max_size=200)
# (line, valid): valid lines are JSON objects by construction and must never be dead-lettered
lines = st.one_of(
    audit_events().map(lambda b: (b, True)),
    secret_events().map(lambda b: (b, True)),
    st.builds(lambda v, s: (b"{" + s + b'"v":' + v + s + b"}", True), any_json, ws),
    any_json.map(lambda b: (b, b.lstrip(b" \t\r\n").startswith(b"{"))),
    mutated().map(lambda b: (b, False)),
    raw_bytes.map(lambda b: (b, False)),
)
batches = st.lists(lines, min_size=1, max_size=6)


# -- the real components ----------------------------------------------------------------------------------------
def transforms() -> list[Any]:
    parsed, _ = parse_policy(POLICY)
    policy = compile_policy(parsed)
    plain = build_transform(policy, EnrichConfig(static_fields={"cluster_id": "c-1"}), node_name="node-1")
    hashed = build_transform(policy, EnrichConfig(redact=RedactConfig(mode="hash", hash_key="k")), node_name="node-1")
    return [plain, hashed, None]  # None: no policy, no enrichment (the plain check)


class Sinks:
    def __init__(self, root: Path) -> None:
        specs = [
            {"type": "file", "name": "file", "path": str(root / "out")},
            {
                "type": "sls",
                "name": "sls",
                "endpoint": "cn-hangzhou.log.aliyuncs.com",
                "project": "proj",
                "logstore": "audit",
                "access_key_id": "A",
                "access_key_secret": "S",
            },
            {
                "type": "sls",
                "name": "sls-small",
                "endpoint": "cn-hangzhou.log.aliyuncs.com",
                "project": "proj",
                "logstore": "audit",
                "access_key_id": "A",
                "access_key_secret": "S",
                "max_value_bytes": 1024,
            },
            {
                "type": "loki",
                "name": "loki",
                "url": "http://127.0.0.1:3100",
                "structured_metadata": ["user", "auditID", "sourceIP", "namespace", "name", "effective_user"],
            },
            {
                "type": "loki",
                "name": "loki-json",
                "url": "http://127.0.0.1:3100",
                "encoding": "json",
                "max_line_bytes": 16384,
                "label_fields": ["verb", "resource", "code", "outcome"],
            },
            {"type": "s3", "name": "s3", "bucket": "audit-bucket", "key_template": "audit/{cluster_id}/%Y/%m/%d/%H/{first_ts}-{seq}.ndjson.zst"},
        ]
        self.sinks = []
        for spec in specs:
            cfg = msgspec.convert(spec, SINK_CONFIGS[spec["type"]])
            self.sinks.append(build_sink(cfg, sink_context(node="node-1", state_dir=root / "state", input_paths=["/var/log/audit.log"])))

    def encode_all(self, records: list[bytes]) -> None:
        for sink in self.sinks:
            requests = sink.encode(records)
            carried = sorted(i for request in requests for i in request.indices)
            assert carried == list(range(len(records))), f"{sink.name}: records carried {carried}"
            for request in requests:  # a request the backend finds too large is split by the same code
                if len(request.indices) == 1:
                    split = sink.split(request, records)
                    assert all(list(part.indices) == list(request.indices) for part in split)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-line-path-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module")
def sinks(workdir: Path) -> Sinks:
    return Sinks(workdir)


def run_batch(workdir: Path, sinks: Sinks, batch: list[tuple[bytes, bool]], transform: Any) -> None:
    payloads = [line.replace(b"\n", b" ") for line, _ in batch]
    path = workdir / "audit.log"
    content = b"".join(p + b"\n" for p in payloads)
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    try:
        read = LineReader(fd, offset=0, gz=False, chunk_bytes=len(content) + 1, max_line_bytes=8 * MiB).read()
    finally:
        os.close(fd)
    shutil.rmtree(workdir / "dl", ignore_errors=True)
    store = DeadLetterStore(workdir / "dl", max_bytes=1 << 40, max_event_bytes=8 * MiB)
    processor = LineProcessor(transform, store)
    chunk = processor.process(7, str(path), read)
    counts = processor.counts()
    dead = sum(n for key, n in counts.items() if key.startswith("deadletter:"))
    # every line accounted for, once
    assert counts["read"] == len(payloads)
    assert len(chunk.records) + counts.get("dropped", 0) + dead + counts.get("blank", 0) == len(payloads)
    assert store.records == dead
    dead_offsets = {rec["source"]["offset"] for rec in store.iter_records()}
    store.close()
    offset = 0
    for payload, (_, valid) in zip(payloads, batch, strict=True):
        if valid:  # built as a JSON object: shipped or dropped by the policy, never dead-lettered
            assert offset not in dead_offsets, payload[:300]
        offset += len(payload) + 1
    for record in chunk.records:
        assert b"\n" not in record
        check_object(record)  # the sinks get JSON objects only
        assert SECRET.encode() not in record or transform is None
    sinks.encode_all(chunk.records)


TRANSFORMS = transforms()


@pytest.mark.parametrize("variant", range(len(TRANSFORMS)), ids=["policy+enrich+redact", "policy+hash-redact", "check-only"])
@FUZZ
@given(batch=batches)
def test_no_line_escapes_and_every_line_is_accounted_for(workdir: Path, sinks: Sinks, variant: int, batch: list[tuple[bytes, bool]]) -> None:
    run_batch(workdir, sinks, batch, TRANSFORMS[variant])


@FUZZ
@given(batch=st.lists(secret_events().map(lambda b: (b, True)), min_size=1, max_size=4))
def test_a_secret_never_leaks_whatever_surrounds_it(workdir: Path, sinks: Sinks, batch: list[tuple[bytes, bool]]) -> None:
    run_batch(workdir, sinks, batch, TRANSFORMS[0])

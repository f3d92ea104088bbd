"""Static and derived enrichment fields."""

from __future__ import annotations

import json

import msgspec
import pytest

from kube_audit_shipper.process.enrich.address import is_public_ip
from kube_audit_shipper.process.enrich.config import DerivedConfig, EnrichConfig, RedactConfig
from kube_audit_shipper.process.enrich.fields import Enricher
from kube_audit_shipper.process.enrich.identity import effective_user, user_kind, user_named_in_reason
from kube_audit_shipper.process.enrich.timestamps import latency_ms, parse_timestamp
from kube_audit_shipper.process.policy.event import UserInfo, decode_event
from tests.support.corpus import DATA

PREFIXES = ("system:", "eks:")


@pytest.mark.parametrize(
    ("username", "groups", "kind"),
    [
        ("system:serviceaccount:kube-system:coredns", ["system:serviceaccounts"], "serviceaccount"),
        ("system:node:ip-10-0-0-1", ["system:nodes", "system:authenticated"], "node"),
        ("kubelet-legacy", ["system:nodes"], "node"),
        ("system:kube-scheduler", [], "system"),
        ("system:apiserver", ["system:masters"], "system"),
        ("eks:node-manager", [], "system"),
        ("system:anonymous", ["system:unauthenticated"], "anonymous"),
        ("someone", ["system:unauthenticated"], "anonymous"),
        ("alice@example.com", ["devs", "system:authenticated"], "human"),
        ("kubernetes-admin", ["system:masters"], "human"),
        ("", ["devs"], "unknown"),
    ],
)
def test_user_kind(username, groups, kind):
    assert user_kind(UserInfo(username=username, groups=groups), PREFIXES) == kind


def test_user_kind_without_user():
    assert user_kind(None, PREFIXES) == "unknown"


REASON = 'RBAC: allowed by ClusterRoleBinding "alice-admin" of ClusterRole "cluster-admin" to User "alice"'


@pytest.mark.parametrize(
    ("user", "impersonated", "reason", "expected"),
    [
        (UserInfo(username="system:admin", groups=[]), "bob", None, "bob"),
        (UserInfo(username="kubernetes-admin", groups=[]), None, REASON, "alice"),
        (
            UserInfo(username="kubernetes-admin", groups=[]),
            None,
            'RBAC: allowed by RoleBinding "x/y" of Role "r" to Group "g"',
            "kubernetes-admin",
        ),
        (UserInfo(username="kubernetes-admin", groups=[]), None, None, "kubernetes-admin"),
        (UserInfo(username="carol", groups=[]), None, REASON, "carol"),
        (UserInfo(username="kubernetes-admin", groups=[]), "bob", REASON, "bob"),
        (None, None, REASON, None),
        (None, "bob", None, "bob"),
    ],
)
def test_effective_user(user, impersonated, reason, expected):
    assert effective_user(user, impersonated, reason, frozenset({"kubernetes-admin"})) == expected


def test_user_named_in_reason():
    assert user_named_in_reason(REASON) == "alice"
    assert user_named_in_reason('... to User "2xx:1234@example"') == "2xx:1234@example"
    assert user_named_in_reason("") is None


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("44.238.138.237", True),
        ("2001:4860:4860::8888", True),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("172.31.255.255", False),
        ("172.32.0.1", True),
        ("192.168.99.1", False),
        ("127.0.0.1", False),
        ("::1", False),
        ("169.254.169.254", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("100.64.0.1", False),
        ("100.127.255.254", False),
        ("100.128.0.1", True),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("fe80::1%eth0", False),
        ("not-an-ip", None),
        ("", None),
    ],
)
def test_is_public_ip(address, public):
    assert is_public_ip(address) is public


@pytest.mark.parametrize(
    ("received", "stage", "expected"),
    [
        ("2018-10-25T13:58:49.730588Z", "2018-10-25T13:58:49.736141Z", 5.553),
        ("2018-10-25T13:58:59.999000Z", "2018-10-25T13:59:00.001000Z", 2.0),
        ("2018-10-25T23:59:59.500000Z", "2018-10-26T00:00:00.000000Z", 500.0),
        ("2022-11-29 22:34:06.892", "2022-11-29 22:40:02.903", 356011.0),
        ("2024-11-13 18:34:10.595141000", "2024-11-13 18:34:10.595494000", 0.353),
        ("2024-01-01T10:00:00+02:00", "2024-01-01T08:00:00.25Z", 250.0),
        ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00Z", 0.0),
        ("2024-01-01T10:00:01Z", "2024-01-01T10:00:00Z", -1000.0),
        ("2024-01-01T10:00:00Z", None, None),
        ("yesterday", "2024-01-01T10:00:00Z", None),
        ("2024-13-01T10:00:00Z", "2024-01-01T10:00:00Z", None),
    ],
)
def test_latency_ms(received, stage, expected):
    assert latency_ms(received, stage) == expected


def test_parse_timestamp_truncates_nanoseconds():
    assert parse_timestamp("2024-11-13 18:34:10.595141999").microsecond == 595141


def event(**fields) -> bytes:
    return json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", **fields}).encode()


def derive(line: bytes, config: EnrichConfig | None = None) -> dict:
    return Enricher(config or EnrichConfig(), "node-1").derive(decode_event(line))


def test_derived_fields_of_a_full_event():
    line = event(
        user={"username": "kubernetes-admin", "groups": ["system:masters"]},
        sourceIPs=["203.0.113.9", "10.0.0.1"],
        responseStatus={"metadata": {}, "code": 101},
        requestReceivedTimestamp="2024-01-01T10:00:00.000100Z",
        stageTimestamp="2024-01-01T10:00:00.250100Z",
        annotations={"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": REASON},
        objectRef={"resource": "pods", "subresource": "exec", "namespace": "prod", "name": "web-0", "apiVersion": "v1"},
        requestURI="/api/v1/namespaces/prod/pods/web-0/exec?command=sh&command=-c&command=cat%20%2Fetc%2Fpasswd&container=app&stdin=true&tty=true",
        verb="create",
    )
    assert derive(line) == {
        "source_ip": "203.0.113.9",
        "source_ip_public": False,  # 203.0.113.0/24 is a documentation range, not routable
        "user_kind": "human",
        "effective_user": "alice",
        "outcome": "success",
        "latency_ms": 250.0,
        "pod_session": {
            "type": "exec",
            "namespace": "prod",
            "pod": "web-0",
            "container": "app",
            "command": ["sh", "-c", "cat /etc/passwd"],
            "command_line": "sh -c 'cat /etc/passwd'",
        },
    }


def test_derived_fields_of_partial_events_are_left_out():
    assert derive(event()) == {"user_kind": "unknown"}
    odd = event(user="x", sourceIPs="1.2.3.4", responseStatus={"code": "200"}, stageTimestamp=5, impersonatedUser=[1])
    assert derive(odd) == {"user_kind": "unknown"}
    assert derive(event(sourceIPs=[7, "8.8.8.8"], responseStatus={"code": 403}, user={"username": "a"})) == {
        "source_ip": "8.8.8.8",
        "source_ip_public": True,
        "user_kind": "human",
        "effective_user": "a",
        "outcome": "failure",
    }


def test_portforward_and_attach_sessions():
    portforward = event(
        requestURI="/api/v1/namespaces/d/pods/db-0/portforward?ports=5432&ports=8080",
        objectRef={"resource": "pods", "subresource": "portforward", "namespace": "d", "name": "db-0"},
    )
    assert derive(portforward)["pod_session"] == {
        "type": "portforward",
        "namespace": "d",
        "pod": "db-0",
        "ports": ["5432", "8080"],
    }
    attach = event(requestURI="/api/v1/namespaces/d/pods/p/attach?container=c&stdin=true")
    assert derive(attach)["pod_session"] == {"type": "attach", "namespace": "d", "pod": "p", "container": "c"}
    assert "pod_session" not in derive(event(requestURI="/api/v1/namespaces/d/pods/p/log?container=c"))
    other_group = event(objectRef={"resource": "pods", "subresource": "exec", "apiGroup": "metrics.k8s.io"})
    assert "pod_session" not in derive(other_group)


def test_corpus_exec_event_decodes_command():
    lines = (DATA / "real-audit" / "panther-labs-panther-analysis-tests.jsonl").read_bytes().splitlines()
    found = [derive(line)["pod_session"] for line in lines if b"credentials.json&container=webapp" in line]
    assert found == [
        {
            "type": "exec",
            "namespace": "production",
            "pod": "webapp-pod",
            "container": "webapp",
            "command": ["tar", "cf", "-", "/app/secrets/credentials.json"],
            "command_line": "tar cf - /app/secrets/credentials.json",
        }
    ]


def test_include_selects_derived_fields():
    config = EnrichConfig(derived=DerivedConfig(include=("outcome", "user_kind")))
    line = event(user={"username": "a"}, responseStatus={"code": 200}, sourceIPs=["8.8.8.8"])
    assert derive(line, config) == {"user_kind": "human", "outcome": "success"}


def test_members_static_node_and_derived_object():
    config = EnrichConfig(static_fields={"cluster_id": "c-1", "region": "cn-hangzhou", "tier": 2})
    members = Enricher(config, "node-1").members(decode_event(event(user={"username": "a"})))
    assert json.loads(b"{" + members + b"}") == {
        "cluster_id": "c-1",
        "region": "cn-hangzhou",
        "tier": 2,
        "node": "node-1",
        "derived": {"user_kind": "human", "effective_user": "a"},
    }


def test_members_custom_names_and_switches():
    config = EnrichConfig(node_field="host", derived=DerivedConfig(field="sec"))
    enricher = Enricher(config, "node-9")
    out = json.loads(b"{" + enricher.members(decode_event(event())) + b"}")
    assert out == {"host": "node-9", "sec": {"user_kind": "unknown"}}
    assert enricher.added_keys == {"host", "sec"}
    quiet = Enricher(EnrichConfig(node_field="", derived=DerivedConfig(enabled=False)), "h")
    assert not quiet.active and quiet.members(decode_event(event())) == b""


def test_empty_section_is_valid_and_everything_is_on():
    config = msgspec.convert({}, EnrichConfig)
    assert config.enabled and config.derived.enabled and config.redact.enabled
    assert config.node_field == "node" and config.derived.field == "derived"
    assert config.added_field_names() == {"node", "derived"}


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"static_fields": {"level": "x"}}, "would overwrite the audit event's own field"),
        ({"node_field": "user"}, "would overwrite"),
        ({"static_fields": {"node": "x"}}, "configured twice"),
        ({"static_fields": {"derived": "x"}}, "configured twice"),
        ({"static_fields": {"": "x"}}, "empty"),
        ({"derived": {"field": ""}}, "length"),
        ({"derived": {"include": ["bogus"]}}, "bogus"),
        ({"redact": {"mode": "shred"}}, "shred"),
        ({"redact": {"rules": [{"resource": "secrets", "fields": []}]}}, "length"),
        ({"colour": 1}, "colour"),
    ],
)
def test_invalid_sections(section, fragment):
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert(section, EnrichConfig)
    assert fragment in str(caught.value)


def test_redact_config_default_rules_can_be_turned_off():
    assert RedactConfig(default_rules=False).effective_rules() == ()
    assert RedactConfig(default_rules=False, query_params=("Sig",)).effective_query_params() == {"sig"}
    assert "token" in RedactConfig().effective_query_params()

"""packaging/grafana/audit-dashboard.json and packaging/loki/audit-rules.yaml against what the Loki sink really writes.

Every LogQL expression is parsed strictly (tests/unit/report/logql.py) and every name it uses is checked against
the sink's defaults, taken from the code: stream labels (`LokiSinkConfig` labels, node_label, label_fields),
structured metadata (`structured_metadata`), and for `| json` the paths an event line has (the audit Event as
`process.policy.event.AuditEventWire` types it, plus the enrichment's `derived` fields as `Enricher` computes
them on a real exec event). A renamed field, label or metadata name fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import msgspec
import pytest
import yaml

from kube_audit_shipper.process.enrich.config import ALL_DERIVED_FIELDS, EnrichConfig
from kube_audit_shipper.process.enrich.fields import Enricher
from kube_audit_shipper.process.enrich.identity import user_kind
from kube_audit_shipper.process.policy.event import AuditEventWire, decode_event
from kube_audit_shipper.process.policy.schema import STAGES
from kube_audit_shipper.sinks.loki.config import LokiSinkConfig
from kube_audit_shipper.sinks.loki.fields import FIELDS
from tests.support.corpus import REPO, corpus_lines
from tests.unit.report.logql import Known, LogQLError, Query, parse

DASHBOARD = REPO / "packaging" / "grafana" / "audit-dashboard.json"
RULES = REPO / "packaging" / "loki" / "audit-rules.yaml"
GRAFANA_VARIABLES = {"$__range": "1h", "$__interval": "1m", "$__auto": "1m", "$node": "node-1"}
VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "proxy"})


def _event_paths() -> tuple[set[str], set[str]]:
    """(exact paths, prefixes under which any key goes) of an event line the sink writes with default enrichment."""
    exact: set[str] = set()
    open_prefixes: set[str] = set()

    def walk(struct: Any, prefix: str) -> None:
        for item in msgspec.structs.fields(struct):
            path = prefix + item.encode_name
            kinds = [t for t in get_args(item.type) if t is not msgspec.UnsetType] or [item.type]
            for kind in kinds:
                if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
                    walk(kind, path + ".")
                elif kind is msgspec.Raw or get_origin(kind) is dict:
                    open_prefixes.add(path + ".")
                elif get_origin(kind) is list:
                    exact.add(path + "[0]")
            exact.add(path)

    walk(AuditEventWire, "")
    enrich = EnrichConfig()
    exact.add(enrich.node_field)
    derived = enrich.derived.field
    exact.update(f"{derived}.{name}" for name in ALL_DERIVED_FIELDS)
    # the pod_session keys, as the enrichment computes them on a real exec event
    enricher = Enricher(enrich, "node-1")
    sessions = [enricher.derive(decode_event(line)).get("pod_session") for line in corpus_lines() if b"/exec?command=" in line]
    keys = {key for session in sessions if isinstance(session, dict) for key in session}
    assert {"type", "namespace", "pod", "container", "command", "command_line"} <= keys
    exact.update(f"{derived}.pod_session.{key}" for key in keys)
    return exact, open_prefixes


def _known() -> Known:
    sink = LokiSinkConfig(name="loki", url="http://127.0.0.1:3100")
    stream: dict[str, frozenset[str] | None] = {name: frozenset({value}) for name, value in sink.labels.items()}
    stream[sink.node_label] = None
    for name in sink.label_fields:
        stream[name] = VERBS if name == "verb" else None
    exact, open_prefixes = _event_paths()
    kinds = frozenset(user_kind(u, ("system:", "eks:")) for u in _users())
    path_values = {
        "stage": frozenset(STAGES),
        "verb": VERBS,
        "derived.user_kind": kinds,
        "derived.source_ip_public": frozenset({"true", "false"}),
        "objectRef.subresource": frozenset({"", "exec", "attach", "portforward", "status", "scale", "binding", "log", "proxy", "token", "eviction"}),
    }
    metadata_values = {"resource": frozenset({"secrets", "services", "roles", "clusterroles", "rolebindings", "clusterrolebindings", "configmaps", "pods"})}

    def json_path(path: str) -> bool:
        return path in exact or any(path.startswith(prefix) and len(path) > len(prefix) for prefix in open_prefixes)

    return Known(
        stream_labels=stream,
        structured_metadata=frozenset(sink.structured_metadata),
        json_paths=json_path,
        values=metadata_values,
        path_values=path_values,
    )


def _users() -> Iterator[Any]:
    class U(msgspec.Struct):
        username: str = ""
        groups: list[str] = []

    yield from (
        U("alice"),
        U("system:serviceaccount:a:b"),
        U("system:node:n", ["system:nodes"]),
        U("system:kube-scheduler"),
        U("system:anonymous"),
    )
    yield None  # no user: unknown


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target))
    return out


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def _grafana(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_the_sink_defaults_the_queries_rely_on() -> None:
    """What the assets assume of the sink, said once: labels, metadata, and the event paths metadata holds."""
    known = _known()
    assert set(known.stream_labels) == {"job", "node", "verb"}
    assert known.stream_labels["job"] == frozenset({"kube-audit"})
    assert known.structured_metadata == {"auditID", "user", "namespace", "resource"}
    assert FIELDS["namespace"].path == ("objectRef", "namespace") and FIELDS["resource"].path == ("objectRef", "resource")


@pytest.mark.parametrize(("panel", "target"), _dashboard_targets(), ids=[f"{p}/{t['refId']}" for p, t in _dashboard_targets()])
def test_every_dashboard_query_uses_only_names_the_sink_writes(panel: str, target: dict[str, Any]) -> None:
    query = parse(_grafana(target["expr"]), _known())
    assert query.logs, panel
    for log in query.logs:
        assert ("job", "=", "kube-audit") in log.matchers and ("node", "=~", "node-1") in log.matchers, panel
    legend = target.get("legendFormat", "")
    for name in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
        assert query.output_labels is not None and name in query.output_labels, (panel, name)


def test_dashboard_structure() -> None:
    dashboard = _dashboard()
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "node"}
    titles = {p["title"] for p in panels}
    for required in (
        "Events",
        "Failed requests",
        "Requests by kind of user",
        "Public-network access by source IP",
        "Command executions (exec, attach)",
        "Resource deletions",
        "Secret reads by people",
        "RBAC changes",
        "CVE-2020-8554 signals",
    ):
        assert required in titles, required
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "loki", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and all(t["datasource"] == panel["datasource"] for t in panel["targets"])
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))


def test_ruler_rules_are_the_two_ack_alerts_over_every_node() -> None:
    rules = _rules()
    assert [rule["alert"] for rule in rules] == ["KubeAuditExecIntoContainer", "KubeAuditPublicAccessFailures"]
    known = _known()
    for rule in rules:
        query: Query = parse(rule["expr"], known)
        for log in query.logs:
            assert [m[0] for m in log.matchers] == ["job"], "an alert counts every control-plane node: no node matcher"
        assert query.output_labels is not None
        for text in rule["annotations"].values():
            for name in re.findall(r"\$labels\.(\w+)", text):
                assert name in query.output_labels, (rule["alert"], name)
        assert rule["labels"]["severity"] in ("warning", "critical")
    exec_rule, public_rule = rules
    assert '| subresource="exec"' in exec_rule["expr"] and "[5m]" in exec_rule["expr"]
    # ≥ 10 requests and > 50 % failed, per source IP, in 5 minutes
    public = " ".join(public_rule["expr"].split())
    assert ") > 0.5 and sum by (source_ip)" in public and public.endswith(">= 10")
    assert public.count("[5m]") == 3 and public.count("code >= 400") == 1


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ('sum(count_over_time({job="kube-audit", cluster="c1"} [5m]))', "stream selector label 'cluster'"),
        ('sum(count_over_time({job="audit"} [5m]))', "'audit' is not a value job takes"),
        ('sum(count_over_time({job="kube-audit"} | json x="objectRef.subresorce" [5m]))', "no audit event line the sink writes has that path"),
        ('sum(count_over_time({job="kube-audit"} | json ip="derived.source_address" [5m]))', "no audit event line"),
        ('sum(count_over_time({job="kube-audit"} | json user="user.username" [5m]))', "taken by a stream label or structured metadata"),
        ('sum(count_over_time({job="kube-audit"} | code >= 400 [5m]))', "label 'code' is neither"),
        ('sum by (pod) (count_over_time({job="kube-audit"} [5m]))', "by (pod)"),
        ('sum(count_over_time({job="kube-audit"} | json [5m]))', "name the paths"),
        ('sum(count_over_time({job="kube-audit"} | json s="stage" | s="Done" [5m]))', "'Done' is not a value"),
        ('sum(count_over_time({job="kube-audit", verb="fetch"} [5m]))', "'fetch' is not a value verb takes"),
        ('{job="kube-audit"} | json p="objectRef.name" | line_format "{{.pod}}"', "label 'pod' is neither"),
        ('sum(count_over_time({job="kube-audit"} [5m])', "expected )"),
    ],
)
def test_the_checker_refuses_what_the_sink_does_not_write(expr: str, problem: str) -> None:
    with pytest.raises(LogQLError, match=re.escape(problem)):
        parse(expr, _known())


def test_assets_are_where_the_readme_says() -> None:
    readme = (REPO / "packaging" / "README.md").read_text()
    assert "grafana/audit-dashboard.json" in readme and "loki/audit-rules.yaml" in readme
    assert Path(DASHBOARD).is_file() and Path(RULES).is_file()

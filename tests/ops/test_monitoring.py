"""packaging/prometheus/alerts.yaml and packaging/grafana/dashboard.json: structure, PromQL parsed
and type-checked by promql-parser (Prometheus' grammar), metric names from the agent's contract,
label references in annotations and legends; with promtool (Debian's prometheus package) where it
is installed, `promtool check rules` and unit tests of when each alert fires. That the agent
really exports every queried metric is checked against a running agent in test_agent_service.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from tests.ops.monitoring import ALERTS, JOB, SCRAPE, SYNTHETIC, alert_rules, all_used_metric_names, dashboard, dashboard_exprs, dashboard_panels, selectors

# The agent's metric names (kube_audit_shipper/obs/metrics.py), as samples: counters with _total, histograms' series.
CONTRACT = {
    "kube_audit_shipper_events_read_total",
    "kube_audit_shipper_events_shipped_total",
    "kube_audit_shipper_events_deadlettered_total",
    "kube_audit_shipper_events_dropped_total",
    "kube_audit_shipper_input_bytes_read_total",
    "kube_audit_shipper_file_bytes_behind",
    "kube_audit_shipper_checkpoint_writes_total",
    "kube_audit_shipper_errors_total",
    "kube_audit_shipper_sink_retries_total",
    "kube_audit_shipper_batch_send_seconds_bucket",
    "kube_audit_shipper_delivery_latency_seconds_bucket",
    "kube_audit_shipper_memory_inflight_bytes",
    "kube_audit_shipper_memory_limit_bytes",
    "kube_audit_shipper_reader_backpressure_waits_total",
    "kube_audit_shipper_sink_state",
    "kube_audit_shipper_sink_blocked_seconds",
    "kube_audit_shipper_spool_bytes",
    "kube_audit_shipper_checkpoint_age_seconds",
    "kube_audit_shipper_oldest_unread_file_at_risk",
    "kube_audit_shipper_config_reloads_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
}
REQUIRED_ALERTS = {
    "KubeAuditShipperDown",  # agent down
    "KubeAuditShipperSinkBlocked",  # sink blocked
    "KubeAuditShipperLagGrowing",  # lag growing
    "KubeAuditShipperOldestUnreadFileAtRisk",  # oldest unread file at risk
}
LABEL_VALUES = {"state": {"ok", "retrying", "blocked"}, "result": {"applied", "restarted", "failed"}, "job": {JOB}}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")


def _grouping(expr: str | Any) -> set[str] | None:
    """Labels an expression's result keeps: those of its outermost `by (...)` (following the left
    side of binary operators), or None when that is every label of the series or unknown."""
    node = promql_parser.parse(expr) if isinstance(expr, str) else expr
    while True:
        if isinstance(node, promql_parser.BinaryExpr):
            node = node.lhs
        elif isinstance(node, promql_parser.ParenExpr):
            node = node.expr
        elif isinstance(node, promql_parser.AggregateExpr):
            mod = node.modifier
            if mod is None:
                return set()  # sum(x): no label is kept
            return set(mod.labels) if mod.type == promql_parser.AggModifierType.By else None
        elif isinstance(node, promql_parser.Call) and node.func.name == "histogram_quantile":
            inner = _grouping(node.args[1])
            return None if inner is None else inner - {"le"}
        else:
            return None


# -- alerts --------------------------------------------------------------------------------------


def test_rule_file_structure() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"}
    names = [g["name"] for g in doc["groups"]]
    assert len(names) == len(set(names))
    seen = set()
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            assert re.fullmatch(r"KubeAuditShipper[A-Z][A-Za-z]+", rule["alert"]) and rule["alert"] not in seen
            seen.add(rule["alert"])
            if "for" in rule:
                assert promql_parser.parse_duration(rule["for"]).total_seconds() > 0
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description"} <= set(rule["annotations"])
    assert seen >= REQUIRED_ALERTS


def test_alert_expressions_are_valid_promql_over_known_metrics() -> None:
    for rule in alert_rules():
        try:
            sels = selectors(rule["expr"])
        except ValueError as e:
            pytest.fail(f"{rule['alert']}: {e}")
        assert sels, rule["alert"]
        for s in sels:
            assert s.name in CONTRACT or s.name in SYNTHETIC, f"{rule['alert']}: unknown metric {s.name}"
            for m in s.matchers.matchers:
                if m.name in LABEL_VALUES and m.op == promql_parser.MatchOp.Equal:
                    assert m.value in LABEL_VALUES[m.name], f"{rule['alert']}: {m.name}={m.value!r}"


def test_the_promql_check_rejects_mistakes() -> None:
    for bad in ("rate(kube_audit_shipper_errors_total)", "sum(rate(x[5m])", "foo_bar(up)", "up{job=}"):
        with pytest.raises(ValueError):
            selectors(bad)


def test_annotations_and_legends_only_use_labels_the_query_keeps() -> None:
    for rule in alert_rules():
        kept = _grouping(rule["expr"])
        used = set()
        for text in rule["annotations"].values():
            assert text.count("{{") == text.count("}}"), rule["alert"]
            used |= set(re.findall(r"\$labels\.([a-zA-Z_]\w*)", text))
        if kept is not None:
            assert used <= kept, f"{rule['alert']}: annotations use {used - kept}, the expression keeps only {kept}"
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expr = dict(dashboard_exprs_by_ref())[(panel["id"], target["refId"])]
            kept = _grouping(expr)
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            if kept is not None:
                assert legend <= kept, f"panel {panel['title']}: legend uses {legend - kept}"


def dashboard_exprs_by_ref() -> list[tuple[tuple[int, str], str]]:
    out = []
    exprs = iter(dashboard_exprs())
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            out.append(((panel["id"], target["refId"]), next(exprs)[1]))
    return out


def test_every_agent_scoped_alert_keeps_instance() -> None:
    for rule in alert_rules():
        kept = _grouping(rule["expr"])
        if kept is not None and "absent(" not in rule["expr"]:
            assert {"job", "instance"} <= kept, rule["alert"]


def test_scrape_config_names_the_job_the_alerts_use() -> None:
    doc = yaml.safe_load(SCRAPE.read_text())
    (job,) = doc["scrape_configs"]
    assert job["job_name"] == JOB
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert {"regex": "kube-audit-shipper", "action": "keep", "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]} in keep
    for rule in alert_rules():
        for s in selectors(rule["expr"]):
            if s.name == "up":
                assert any(m.name == "job" and m.value == JOB for m in s.matchers.matchers)


@needs_promtool
def test_promtool_check_rules() -> None:
    r = subprocess.run([PROMTOOL or "promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and f"SUCCESS: {len(alert_rules())} rules found" in r.stdout, r.stdout + r.stderr


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    all_labels = {"job": JOB, "instance": "cp-1", **labels}
    return {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in all_labels.items()) + "}", "values": values}


def _fires(alert: str, at: str, **labels: str) -> dict[str, Any]:
    severity = next(r["labels"]["severity"] for r in alert_rules() if r["alert"] == alert)
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": {"severity": severity, "job": JOB, "instance": "cp-1", **labels}}]}


def _quiet(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


MIB = 1 << 20
PROMTOOL_TESTS: list[dict[str, Any]] = [
    {  # the agent stops answering
        "interval": "1m",
        "input_series": [_series("up", "1 1 0x10")],
        "alert_rule_test": [_quiet("KubeAuditShipperDown", "5m"), _fires("KubeAuditShipperDown", "8m"), _quiet("KubeAuditShipperAbsent", "8m")],
    },
    {  # no target at all
        "interval": "1m",
        "input_series": [{"series": 'up{job="something-else"}', "values": "1x30"}],
        "alert_rule_test": [
            _quiet("KubeAuditShipperAbsent", "10m"),
            {"eval_time": "20m", "alertname": "KubeAuditShipperAbsent", "exp_alerts": [{"exp_labels": {"severity": "warning", "job": JOB}}]},
        ],
    },
    {  # one sink blocked, another only retrying for a moment
        "interval": "1m",
        "input_series": [
            _series("kube_audit_shipper_sink_state", "0 0 1x10", sink="sls", state="blocked"),
            _series("kube_audit_shipper_sink_state", "1 1 0x10", sink="sls", state="ok"),
            _series("kube_audit_shipper_sink_state", "0 1 0x10", sink="archive", state="retrying"),
            _series("kube_audit_shipper_sink_state", "0 0 0x10", sink="archive", state="blocked"),
        ],
        "alert_rule_test": [
            _quiet("KubeAuditShipperSinkBlocked", "4m"),
            _fires("KubeAuditShipperSinkBlocked", "9m", sink="sls"),
            _quiet("KubeAuditShipperSinkRetrying", "9m"),
        ],
    },
    {  # the backlog grows for an hour on one node; a large but flat backlog on another is fine
        "interval": "1m",
        "input_series": [
            _series("kube_audit_shipper_file_bytes_behind", f"{20 * MIB}+{MIB}x60", path="/var/log/kubernetes/audit/audit.log"),
            _series("kube_audit_shipper_file_bytes_behind", f"{5 * MIB}x60", path="/var/log/kubernetes/audit/audit-2026-01-01T00-00-00.000.log"),
            _series("kube_audit_shipper_file_bytes_behind", f"{500 * MIB}x60", instance="cp-2", path="/var/log/kubernetes/audit/audit.log"),
        ],
        "alert_rule_test": [_quiet("KubeAuditShipperLagGrowing", "10m"), _fires("KubeAuditShipperLagGrowing", "50m")],
    },
    {  # the oldest unread file becomes the oldest backup on disk
        "interval": "1m",
        "input_series": [_series("kube_audit_shipper_oldest_unread_file_at_risk", "0 0 0 1x5")],
        "alert_rule_test": [_quiet("KubeAuditShipperOldestUnreadFileAtRisk", "3m"), _fires("KubeAuditShipperOldestUnreadFileAtRisk", "5m")],
    },
    {  # checkpoints stop being written
        "interval": "1m",
        "input_series": [_series("kube_audit_shipper_checkpoint_age_seconds", "1 1 1 60+60x20")],
        "alert_rule_test": [_quiet("KubeAuditShipperCheckpointStale", "6m"), _fires("KubeAuditShipperCheckpointStale", "14m")],
    },
    {  # reloads: applied ones are quiet, a failed one alerts
        "interval": "1m",
        "input_series": [
            _series("kube_audit_shipper_config_reloads_total", "0 1 2 3 4 5 6", result="applied"),
            _series("kube_audit_shipper_config_reloads_total", "0 0 0 0 1 1 1", result="failed"),
        ],
        "alert_rule_test": [_quiet("KubeAuditShipperConfigReloadFailed", "3m"), _fires("KubeAuditShipperConfigReloadFailed", "5m")],
    },
    {  # dead letters and errors
        "interval": "1m",
        "input_series": [
            _series("kube_audit_shipper_events_deadlettered_total", "0 0 3 3 3", reason="invalid_json"),
            _series("kube_audit_shipper_errors_total", "0+1x30", kind="sink"),
        ],
        "alert_rule_test": [
            _fires("KubeAuditShipperDeadLetters", "4m", reason="invalid_json"),
            _quiet("KubeAuditShipperErrors", "10m"),
            _fires("KubeAuditShipperErrors", "25m", kind="sink"),
        ],
    },
    {  # at the memory limit for a long time
        "interval": "1m",
        "input_series": [
            _series("kube_audit_shipper_memory_inflight_bytes", f"{10 * MIB} {63 * MIB}x30"),
            _series("kube_audit_shipper_memory_limit_bytes", f"{64 * MIB}x31"),
        ],
        "alert_rule_test": [_quiet("KubeAuditShipperMemoryBackpressure", "10m"), _fires("KubeAuditShipperMemoryBackpressure", "20m")],
    },
    {  # deliveries take minutes
        "interval": "1m",
        "input_series": [
            _series("kube_audit_shipper_delivery_latency_seconds_bucket", "0+1x40", sink="sls", le="30"),
            _series("kube_audit_shipper_delivery_latency_seconds_bucket", "0+2x40", sink="sls", le="60"),
            _series("kube_audit_shipper_delivery_latency_seconds_bucket", "0+10x40", sink="sls", le="300"),
            _series("kube_audit_shipper_delivery_latency_seconds_bucket", "0+10x40", sink="sls", le="+Inf"),
        ],
        "alert_rule_test": [_quiet("KubeAuditShipperDeliverySlow", "10m"), _fires("KubeAuditShipperDeliverySlow", "30m", sink="sls")],
    },
]


@needs_promtool
def test_promtool_unit_tests_of_when_alerts_fire(tmp_path: Path) -> None:
    """promtool compares annotations too; they are covered by `check rules` (template syntax) and the
    label test above, so the rules are copied without them and the tests pin labels and timing."""
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": PROMTOOL_TESTS}))
    r = subprocess.run([PROMTOOL or "promtool", "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    tested = {t["alertname"] for case in PROMTOOL_TESTS for t in case["alert_rule_test"]}
    assert tested == {rule["alert"] for rule in alert_rules()}


# -- dashboard -----------------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    d = dashboard()
    assert d["uid"] == "kube-audit-shipper" and d["title"] and isinstance(d["schemaVersion"], int)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert f'up{{job="{JOB}"}}' in variables["instance"]["definition"]
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"panel {p['title']} overlaps another"
        occupied |= cells
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and p.get("description"), p["title"]
            for t in p["targets"]:
                assert t["datasource"] == p["datasource"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs))


def test_dashboard_queries_are_valid_promql_over_known_metrics() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    for title, expr in exprs:
        try:
            sels = selectors(expr)
        except ValueError as e:
            pytest.fail(f"panel {title}: {e}: {expr}")
        for s in sels:
            assert s.name in CONTRACT or s.name in SYNTHETIC, f"panel {title}: unknown metric {s.name}"
            matchers = {m.name: m for m in s.matchers.matchers}
            assert matchers["job"].value == JOB, f"panel {title}: not scoped to job {JOB}"
            assert "instance" in matchers, f"panel {title}: ignores the node selection"


def test_alerts_and_dashboard_cover_the_new_health_metrics() -> None:
    used = all_used_metric_names()
    for name in (
        "kube_audit_shipper_sink_state",
        "kube_audit_shipper_oldest_unread_file_at_risk",
        "kube_audit_shipper_file_bytes_behind",
        "kube_audit_shipper_checkpoint_age_seconds",
        "kube_audit_shipper_spool_bytes",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ):
        assert name in used, name
    assert {"alert", "panel"} <= {where.split()[0] for where in used["kube_audit_shipper_sink_state"]}

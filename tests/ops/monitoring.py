"""The PromQL of packaging/prometheus/alerts.yaml and packaging/grafana/dashboard.json, parsed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "packaging" / "prometheus" / "alerts.yaml"
SCRAPE = REPO / "packaging" / "prometheus" / "scrape.yaml"
DASHBOARD = REPO / "packaging" / "grafana" / "dashboard.json"
JOB = "kube-audit-shipper"

# Grafana's variables, replaced by what Grafana would put there before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h", "${instance}": ".*", "$instance": ".*"}

# Sample names Prometheus itself adds: not exported by the agent.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep theirs inside
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL as Grafana sends it) for every query of every panel."""
    out = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


def selectors(expr: str) -> list[Any]:
    """Every vector selector in the expression (raises ValueError on invalid PromQL)."""
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def metric_names(expr: str) -> set[str]:
    return {s.name for s in selectors(expr) if s.name}


def all_used_metric_names() -> dict[str, set[str]]:
    """Sample name → where it is used ("alert X" / "panel Y")."""
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for title, expr in dashboard_exprs():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"panel {title}")
    return used


_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.M)
_SUFFIXES = {
    "counter": ("_total",),  # prometheus_client's 0.0.4 text names the family with _total already
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "untyped": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


def exposed_sample_names(exposition: str) -> set[str]:
    """Every sample name a Prometheus text exposition declares (from its # TYPE lines, so families
    with no sample yet count too)."""
    names = set()
    for family, kind in _TYPE.findall(exposition):
        if kind == "counter" and family.endswith("_total"):
            names.add(family)
            continue
        for suffix in _SUFFIXES[kind]:
            names.add(family + suffix)
    return names

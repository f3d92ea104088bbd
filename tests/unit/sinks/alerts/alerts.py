"""Alert records as detection raises them (kube_audit_shipper/process/detect: the built-in rules' ids, fields and
output), for the alert target tests: one-off detections, an aggregate, and a stream of varied ones."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from kube_audit_shipper.model import Alert, AlertWindow, alert_encoder

T0 = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
USERS = ["alice@example.com", "bob", "kubernetes-admin", "system:serviceaccount:ci:deployer", "dev_ops*team"]
NAMESPACES = ["default", "payments", "kube-system", "team-a"]
COMMANDS = ["sh -c id", "bash", "cat /etc/shadow", "curl -s http://169.254.169.254/latest/meta-data/", "python3 -c 'import os; os.system(\"id\")'"]


def stamp(t: datetime) -> str:
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond:06d}Z"


def exec_alert(n: int = 0, *, at: datetime | None = None, **over: Any) -> Alert:
    """`exec-into-container` for request n (its own auditID)."""
    t = at or T0 + timedelta(seconds=n)
    audit_id = f"5f1c{n:04x}-0d3a-4c55-9e1b-7a6e2c0b{n:04x}"
    user, ns, cmd = USERS[n % len(USERS)], NAMESPACES[n % len(NAMESPACES)], COMMANDS[n % len(COMMANDS)]
    fields = {
        "namespace": ns,
        "pod": f"web-{n}-7d9f8c6b5-x2k4q",
        "container": "app",
        "command": cmd,
        "user": user,
        "source_ip": f"203.0.113.{n % 250 + 1}",
        "code": 101,
        "user_agent": "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46",
    }
    values: dict[str, Any] = {
        "rule": "exec-into-container",
        "severity": "high",
        "time": stamp(t),
        "summary": f"{user} ran `{cmd}` in {ns}/web-{n} container app from 203.0.113.{n % 250 + 1} (code 101)",
        "audit_ids": [audit_id],
        "fields": fields,
        "tags": ["mitre:T1609", "mitre:execution"],
        "id": f"exec-into-container:{audit_id}",
        "node": "cp-1",
        "cluster": "prod-hz",
    }
    values.update(over)
    return Alert(**values)


def public_failures_alert(n: int = 0, **over: Any) -> Alert:
    """`public-access-failures`, an aggregate over a 5-minute window for one source IP."""
    ip = f"198.51.100.{n % 250 + 1}"
    start = T0 + timedelta(minutes=5 * n)
    end = start + timedelta(minutes=4, seconds=30)
    values: dict[str, Any] = {
        "rule": "public-access-failures",
        "severity": "critical",
        "time": stamp(end),
        "summary": f"{ip}: 42 requests, 88% failed (37 with 403) in 5 minutes",
        "audit_ids": [f"agg-{n}-{k}" for k in range(3)],
        "fields": {"source_ip": ip, "requests": 42, "failure_rate": 0.88, "forbidden": 37, "source_geo": {"country": "NL", "asn": 64500}},
        "tags": ["mitre:T1078", "mitre:initial-access"],
        "id": f"public-access-failures:{ip}:{stamp(start)}",
        "group": ip,
        "count": 42,
        "window": AlertWindow(start=stamp(start), end=stamp(end), seconds=300.0),
        "node": "cp-1",
    }
    values.update(over)
    return Alert(**values)


def secret_alert(n: int = 0, **over: Any) -> Alert:
    values: dict[str, Any] = {
        "rule": "secret-read-by-human",
        "severity": "medium",
        "time": stamp(T0 + timedelta(seconds=n)),
        "summary": f"{USERS[n % len(USERS)]} read secret payments/db-{n}",
        "audit_ids": [f"sec-{n:06d}"],
        "fields": {"namespace": "payments", "name": f"db-{n}", "verb": "get", "user": USERS[n % len(USERS)]},
        "tags": ["mitre:T1552"],
        "id": f"secret-read-by-human:sec-{n:06d}",
    }
    values.update(over)
    return Alert(**values)


def mixed(n: int, seed: int = 7) -> list[Alert]:
    """n distinct alerts of every kind and severity, in a shuffled order."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.choice(["exec", "exec", "agg", "secret", "info", "low"])
        if kind == "exec":
            out.append(exec_alert(i))
        elif kind == "agg":
            out.append(public_failures_alert(i))
        elif kind == "secret":
            out.append(secret_alert(i))
        else:
            severity = "info" if kind == "info" else "low"
            out.append(secret_alert(i, rule="nodeport-service", severity=severity, id=f"nodeport-service:np-{i}", audit_ids=[f"np-{i}"]))
    return out


def records(alerts: list[Alert]) -> list[bytes]:
    return [alert_encoder.encode(a) for a in alerts]

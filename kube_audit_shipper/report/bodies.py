"""What the report reads from a request body: the few writes where the body is the point.

Only RBAC writes (who was bound to what, which rules a role grants) and Service writes (CVE-2020-8554:
`spec.externalIPs`, `status.loadBalancer.ingress`) are parsed, and only when the event was recorded at
Request level or above; every other body is skipped unparsed. A body may be the object (create, update,
apply, merge or strategic-merge patch) or a JSON patch (a list of operations); both are read. Anything of an
unexpected shape reads as "nothing found", never as an error.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from kube_audit_shipper.report.tables import clip

_DECODER = msgspec.json.Decoder()
MAX_DETAIL_CHARS = 300
_POWER_VERBS = ("escalate", "bind", "impersonate")


def parse(raw: msgspec.Raw | UnsetType | None) -> Any:
    """The decoded body, None when absent or not JSON (or nested past the decoder's limit)."""
    if raw is None or raw is UNSET or not raw:
        return None
    try:
        return _DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None


def _get(node: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _patch_values(body: Any, path_prefix: str) -> list[Any]:
    """Values a JSON patch adds or replaces at `path_prefix` (or below it)."""
    if not isinstance(body, list):
        return []
    values = []
    for op in body:
        if isinstance(op, dict) and op.get("op") in ("add", "replace") and isinstance(op.get("path"), str) and op["path"].startswith(path_prefix):
            values.append(op.get("value"))
    return values


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def external_ips(body: Any) -> list[str]:
    """The `spec.externalIPs` a Service write sets (object, merge patch or JSON patch)."""
    found = _strings(_get(body, "spec", "externalIPs"))
    for value in _patch_values(body, "/spec/externalIPs"):
        found.extend(_strings(value))
    return found


def load_balancer_ips(body: Any) -> list[str]:
    """The `status.loadBalancer.ingress[].ip`/`hostname` a services/status write sets."""
    ingress = _get(body, "status", "loadBalancer", "ingress")
    items: list[Any] = list(ingress) if isinstance(ingress, list) else []
    for value in _patch_values(body, "/status/loadBalancer"):
        if isinstance(value, dict):
            inner = value.get("ingress")
            items.extend(inner if isinstance(inner, list) else [value])
        elif isinstance(value, list):
            items.extend(value)
    found = []
    for item in items:
        if isinstance(item, dict):
            found.extend(_strings(item.get("ip")) + _strings(item.get("hostname")))
    return found


def rbac_detail(resource: str, body: Any) -> str:
    """One line on what an RBAC write grants: the role and subjects of a binding, the rules of a role."""
    if body is None:
        return ""
    if isinstance(body, list):  # a JSON patch
        paths: list[str] = [op["path"] for op in body if isinstance(op, dict) and isinstance(op.get("path"), str)]
        return clip(f"JSON patch of {', '.join(paths)}" if paths else "", MAX_DETAIL_CHARS)
    if not isinstance(body, dict):
        return ""
    if resource.endswith("bindings"):
        role = body.get("roleRef")
        role_text = f"{role.get('kind', '')} {role.get('name', '')}".strip() if isinstance(role, dict) else ""
        subjects = body.get("subjects")
        names = []
        for subject in subjects if isinstance(subjects, list) else []:
            if isinstance(subject, dict):
                ns = subject.get("namespace")
                name = f"{subject.get('kind', '')} {ns + '/' if isinstance(ns, str) and ns else ''}{subject.get('name', '')}".strip()
                names.append(name)
        text = " → ".join(part for part in (role_text, ", ".join(names)) if part)
        return clip(text, MAX_DETAIL_CHARS)
    rules = body.get("rules")
    if not isinstance(rules, list):
        return ""
    wildcard = False
    power: set[str] = set()
    for rule in rules:
        if not isinstance(rule, dict):
            continue
        verbs = _strings(rule.get("verbs"))
        if "*" in verbs or "*" in _strings(rule.get("resources")) or "*" in _strings(rule.get("apiGroups")):
            wildcard = True
        power.update(verb for verb in verbs if verb in _POWER_VERBS)
    notes = [f"{len(rules)} rule(s)"]
    if wildcard:
        notes.append("wildcard (*)")
    if power:
        notes.append("grants " + ", ".join(sorted(power)))
    return clip("; ".join(notes), MAX_DETAIL_CHARS)

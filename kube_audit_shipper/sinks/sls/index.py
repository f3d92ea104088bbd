"""The logstore index `sls ensure` creates: what ACK's audit dashboards, alerts and queries need.

Logtail's JSON mode (and this sink) stores the top-level audit keys as fields and nested objects as compact
JSON, so the nested fields the ACK queries name (`objectRef.subresource`, `user.username`,
`"responseStatus.code"`, `"annotations.authorization.k8s.io/reason"`) are served by JSON-type indexes on
`objectRef`, `user`, `responseStatus` and `annotations`, with the sub-keys the queries SELECT or compare listed in
`json_keys` (doc_value on, so SQL can read them; `responseStatus.code` as long, so `>= 400` works). A sub-key with
dots in its own name (`authorization.k8s.io/reason`) is written as its path, as SLS flattens JSON with `.`.

The body is the SLS CreateIndex JSON (`line`, `keys`), the shape the SDK's `IndexConfig.to_json()` produces.
"""

from __future__ import annotations

from typing import Any

#: SLS's usual token separators (the console's default list)
TOKENS = [",", " ", "'", '"', ";", "=", "(", ")", "[", "]", "{", "}", "?", "@", "&", "<", ">", "/", ":", "\n", "\t", "\r"]


def _text(doc_value: bool = True) -> dict[str, Any]:
    return {"type": "text", "token": TOKENS, "caseSensitive": False, "doc_value": doc_value, "chn": False}


def _json(sub: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "json",
        "token": TOKENS,
        "caseSensitive": False,
        "doc_value": False,
        "chn": False,
        "index_all": True,
        "max_depth": -1,
        "json_keys": {k: {"type": t, "doc_value": True} for k, t in sub.items()},
    }


#: top-level text keys (all SELECT-able) and JSON keys with the sub-keys the ACK queries use
TEXT_KEYS = (
    "auditID",
    "verb",
    "stage",
    "level",
    "requestURI",
    "userAgent",
    "sourceIPs",
    "requestReceivedTimestamp",
    "stageTimestamp",
    "kind",
    "apiVersion",
    "node",
    "cluster_id",
)
BODY_KEYS = ("requestObject", "responseObject")  # searchable, not for SQL (large)
JSON_KEYS: dict[str, dict[str, str]] = {
    "user": {"username": "text", "uid": "text", "groups": "text"},
    "impersonatedUser": {"username": "text", "groups": "text"},
    "objectRef": {"resource": "text", "namespace": "text", "name": "text", "subresource": "text", "apiGroup": "text", "apiVersion": "text", "uid": "text"},
    "responseStatus": {"code": "long", "status": "text", "reason": "text", "message": "text"},
    "annotations": {
        "authorization.k8s.io/decision": "text",
        "authorization.k8s.io/reason": "text",
        "pod-security.kubernetes.io/enforce-policy": "text",
        "kube-audit-shipper.io/truncated": "text",
    },
    "derived": {"source_ip": "text", "source_ip_public": "text", "user_kind": "text", "effective_user": "text", "outcome": "text", "latency_ms": "double"},
}


def audit_index() -> dict[str, Any]:
    keys: dict[str, Any] = {k: _text() for k in TEXT_KEYS}
    keys.update({k: _text(doc_value=False) for k in BODY_KEYS})
    keys.update({k: _json(sub) for k, sub in JSON_KEYS.items()})
    return {"line": {"token": TOKENS, "caseSensitive": False, "chn": False}, "keys": keys, "max_text_len": 16384}


def missing(existing: dict[str, Any]) -> list[str]:
    """What `existing` (a GetIndex answer) lacks of `audit_index()`: `key`, or `key.subkey` for a JSON key's
    sub-key, or `key (json, is text)` for a key indexed with another type."""
    have = existing.get("keys") or {}
    out = []
    for key, want in audit_index()["keys"].items():
        got = have.get(key)
        if got is None:
            out.append(key)
            continue
        if want["type"] == "json":
            if got.get("type") != "json":
                out.append(f"{key} (json, is {got.get('type', 'text')})")
                continue
            sub = got.get("json_keys") or {}
            out.extend(f"{key}.{s}" for s in want["json_keys"] if s not in sub)
    return out


def merged(existing: dict[str, Any]) -> dict[str, Any]:
    """`existing` with what is missing added; keys it already has are kept as they are (except a JSON key's
    missing sub-keys, which are added)."""
    want = audit_index()
    out = dict(existing)
    out.pop("lastModifyTime", None)
    out.pop("storage", None)
    keys = dict(out.get("keys") or {})
    for key, spec in want["keys"].items():
        got = keys.get(key)
        if got is None:
            keys[key] = spec
        elif spec["type"] == "json" and got.get("type") == "json":
            sub = dict(got.get("json_keys") or {})
            for s, v in spec["json_keys"].items():
                sub.setdefault(s, v)
            keys[key] = {**got, "json_keys": sub}
    out["keys"] = keys
    out.setdefault("line", want["line"])
    return out

"""Event fields a Loki stream label or structured metadata can be taken from, and how many values each has.

A Loki label multiplies streams: every distinct label set is one stream, with its own chunks and index
entries, and Loki caps them (`max_global_streams_per_user`, 5000 by default). So only fields with a small,
fixed set of values are labels by default (verb, stage, level, resource, code, ...). Fields with unbounded
values (users, namespaces, object names, IPs, IDs) are refused as labels unless the config forces them, and
belong in structured metadata (Loki 3), which is stored per entry and is not indexed as a stream.

Names are those users query in Loki: the audit Event's own field name where the field is top-level
(`verb`, `auditID`), a short name for nested ones (`user` is `user.username`, `resource` is
`objectRef.resource`), the enrichment's name for the `derived` object's fields.
"""

from __future__ import annotations

import re
from typing import NamedTuple

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


class Field(NamedTuple):
    path: tuple[str, ...]  # keys from the event's top level; a list value gives its first element
    unbounded: str  # "": few values (a fine label); else why it is not a label


_USERS = "one stream per user name, and user names are unbounded (people, service accounts, nodes, bootstrap tokens)"
FIELDS: dict[str, Field] = {
    "verb": Field(("verb",), ""),
    "stage": Field(("stage",), ""),
    "level": Field(("level",), ""),
    "resource": Field(("objectRef", "resource"), ""),
    "subresource": Field(("objectRef", "subresource"), ""),
    "apiGroup": Field(("objectRef", "apiGroup"), ""),
    "code": Field(("responseStatus", "code"), ""),
    "decision": Field(("annotations", "authorization.k8s.io/decision"), ""),
    "outcome": Field(("derived", "outcome"), ""),
    "user_kind": Field(("derived", "user_kind"), ""),
    "source_ip_public": Field(("derived", "source_ip_public"), ""),
    "auditID": Field(("auditID",), "a new value for every event: one stream per event"),
    "user": Field(("user", "username"), _USERS),
    "impersonatedUser": Field(("impersonatedUser", "username"), _USERS),
    "effective_user": Field(("derived", "effective_user"), _USERS),
    "namespace": Field(("objectRef", "namespace"), "one stream per namespace; namespaces are created and deleted all the time (CI, tenants)"),
    "name": Field(("objectRef", "name"), "object names are unbounded (generated pod, replica set and lease names)"),
    "requestURI": Field(("requestURI",), "URIs carry names, label selectors and resource versions: unbounded"),
    "userAgent": Field(("userAgent",), "user agents carry versions and binary names: unbounded"),
    "sourceIP": Field(("sourceIPs",), "one stream per client address: unbounded"),
}


def cardinality_problem(name: str) -> str | None:
    """Why `name` must not be a label (None when it may)."""
    field = FIELDS.get(name)
    if field is None:
        return f"unknown field {name!r}; known: {', '.join(FIELDS)}"
    return field.unbounded or None


def label_value(value: object) -> str | None:
    """A field value as a label or structured-metadata value; None for absent, empty or structured values."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return None


def truncate_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, on a character boundary."""
    if len(text) * 4 <= limit:
        return text
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")

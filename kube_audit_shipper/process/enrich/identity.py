"""Who did it: the kind of the authenticated user, and the person actually behind the request.

`user_kind` classifies the *authenticated* user (`user`), from its name and groups, first match wins:

| value | when |
| --- | --- |
| `unknown` | no user (failed authentication: `user: {}`) |
| `anonymous` | `system:anonymous`, or member of `system:unauthenticated` |
| `serviceaccount` | `system:serviceaccount:<ns>:<name>` |
| `node` | `system:node:<name>`, or member of `system:nodes` |
| `system` | a control-plane component: name starts with a configured prefix (`system:`, `eks:`) |
| `human` | anything else (certificate, OIDC, cloud IAM users) |

`effective_user` is the identity the request acted for: the impersonated user when there is one; for a shared
administrator identity (e.g. ACK's `kubernetes-admin`), the user named in the `authorization.k8s.io/reason`
annotation (`RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to User "alice"`), as Alibaba Cloud's
exec-alert query extracts it; otherwise the authenticated user.
"""

from __future__ import annotations

import re

from msgspec import UnsetType

from kube_audit_shipper.process.enrich.view import UserView

ANONYMOUS_USER = "system:anonymous"
UNAUTHENTICATED_GROUP = "system:unauthenticated"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
REASON_ANNOTATION = "authorization.k8s.io/reason"

_REASON_USER = re.compile(r'\bto User "([^"]+)"')


def user_kind(user: UserView | UnsetType | None, system_prefixes: tuple[str, ...]) -> str:
    if not user:
        return "unknown"
    name = user.username or ""
    groups = user.groups or ()
    if name == ANONYMOUS_USER or UNAUTHENTICATED_GROUP in groups:
        return "anonymous"
    if name.startswith(SERVICE_ACCOUNT_PREFIX):
        return "serviceaccount"
    if name.startswith(NODE_PREFIX) or NODES_GROUP in groups:
        return "node"
    if name.startswith(system_prefixes):
        return "system"
    if not name:
        return "unknown"
    return "human"


def user_named_in_reason(reason: str | None) -> str | None:
    """The user an RBAC authorization reason grants to (`... to User "alice"`), if any."""
    if not reason:
        return None
    match = _REASON_USER.search(reason)
    return match.group(1) if match else None


def effective_user(
    user: UserView | UnsetType | None,
    impersonated: str | None,
    reason: str | None,
    shared_admin_users: frozenset[str],
) -> str | None:
    """The impersonated user, else for a shared admin identity the user in the reason, else the user's name."""
    if impersonated:
        return impersonated
    if not user or not user.username:
        return None
    if user.username in shared_admin_users:
        return user_named_in_reason(reason) or user.username
    return user.username

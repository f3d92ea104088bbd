"""exec / attach / portforward: which pod, which container, which command.

These are `pods/<name>/<subresource>` requests (verb `create` over SPDY, `get` over WebSockets); the container,
the command and the ports are only in the requestURI query:
`/api/v1/namespaces/ns/pods/web-0/exec?command=sh&command=-c&command=id&container=app&stdin=true&tty=true`.

The `pod_session` object holds `type` (the subresource), `namespace`, `pod`, and when present `container`,
`command` (the argv list, percent-decoded), `command_line` (the argv joined with shell quoting, for searching)
and `ports` (portforward).
"""

from __future__ import annotations

import shlex
from urllib.parse import parse_qsl, unquote

from kube_audit_shipper.process.enrich.view import AuditEventView, api_group

SESSION_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})


def pod_session(view: AuditEventView) -> dict[str, object] | None:
    """The pod session fields of an exec/attach/portforward event, None for any other event."""
    ref = view.objectRef
    if ref and (ref.subresource not in SESSION_SUBRESOURCES or ref.resource != "pods" or api_group(ref)):
        return None
    uri = view.requestURI or ""
    path, _, query = uri.partition("?")
    if ref:
        kind, namespace, pod = ref.subresource, ref.namespace or "", ref.name or ""
    else:
        if "/pods/" not in path:
            return None
        parsed = _from_path(path)
        if parsed is None:
            return None
        kind, namespace, pod = parsed
    session: dict[str, object] = {"type": kind, "namespace": namespace, "pod": pod}
    if not query:
        return session
    command: list[str] = []
    ports: list[str] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "container" and "container" not in session:
            session["container"] = value
        elif key == "command":
            command.append(value)
        elif key == "ports":
            ports.append(value)
    if command:
        session["command"] = command
        session["command_line"] = shlex.join(command)
    if ports:
        session["ports"] = ports
    return session


def _from_path(path: str) -> tuple[str, str, str] | None:
    """(subresource, namespace, pod) from `/api/v1/namespaces/<ns>/pods/<pod>/<subresource>` (no objectRef)."""
    parts = unquote(path).strip("/").split("/")
    if len(parts) == 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods" and parts[6] in SESSION_SUBRESOURCES:
        return parts[6], parts[3], parts[5]
    return None

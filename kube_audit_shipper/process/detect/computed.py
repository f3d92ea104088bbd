"""Values computed from an event, named `@name` in rule paths (documented in docs/rules.md).

They answer what the raw JSON makes awkward: who acted (`@user`: the impersonated user, or for a shared
administrator identity the user in the authorization reason), the full exec command (`@command`: every
`command=` parameter of the requestURI, percent-decoded, in order), the pod spec of a Pod *or* of a workload
template (`@podspec`), every container of it (`@containers`), whether the client address is public, and what the
configured databases say about it. Each is computed at most once per event, when a rule reads it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote

from msgspec import UNSET

from kube_audit_shipper.process.detect.context import NOT_YET, EventContext
from kube_audit_shipper.process.detect.eventtime import format_time
from kube_audit_shipper.process.enrich.identity import REASON_ANNOTATION, effective_user, user_kind
from kube_audit_shipper.process.enrich.session import pod_session

#: Where the pod spec is inside each workload's body (resource → keys from the body root).
_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "pods": ("spec",),
    "podtemplates": ("template", "spec"),
    "cronjobs": ("spec", "jobTemplate", "spec", "template", "spec"),
}
_TEMPLATE_PATH = ("spec", "template", "spec")  # deployments, daemonsets, statefulsets, replicasets, jobs, RCs
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def _user(ctx: EventContext) -> Any:
    view = ctx.view
    impersonated = view.impersonatedUser
    impersonated_name = (impersonated.username or None) if impersonated else None
    user = view.user
    reason = None
    if impersonated_name is None and user and user.username in ctx.env.shared_admin_users:
        annotations = view.annotations
        reason = annotations.get(REASON_ANNOTATION) if annotations else None
    name = effective_user(user, impersonated_name, reason, ctx.env.shared_admin_users)
    return UNSET if name is None else name


def _user_kind(ctx: EventContext) -> Any:
    return user_kind(ctx.view.user, ctx.env.system_user_prefixes)


def _impersonated(ctx: EventContext) -> Any:
    impersonated = ctx.view.impersonatedUser
    return impersonated.username if impersonated else UNSET


def _source_ip(ctx: EventContext) -> Any:
    addresses = ctx.view.sourceIPs
    return addresses[0] if addresses else UNSET


def _source_ip_public(ctx: EventContext) -> Any:
    addresses = ctx.view.sourceIPs
    if not addresses:
        return UNSET
    public = ctx.env.is_public(addresses[0])
    return UNSET if public is None else public


def _code(ctx: EventContext) -> Any:
    status = ctx.view.responseStatus
    return status.code if status else UNSET


def _path(ctx: EventContext) -> Any:
    uri = ctx.view.requestURI
    if not uri:
        return UNSET
    path = uri.partition("?")[0]
    return unquote(path) if "%" in path else path


def _query(ctx: EventContext) -> Any:
    memo = ctx.memo("@query")
    if memo is not NOT_YET:
        return memo
    uri = ctx.view.requestURI
    query = uri.partition("?")[2] if uri else ""
    return ctx.remember("@query", parse_qs(query, keep_blank_values=True) if query else UNSET)


def _session(ctx: EventContext) -> dict[str, Any] | None:
    memo = ctx.memo("@session")
    if memo is not NOT_YET:
        return memo  # type: ignore[no-any-return]
    return ctx.remember("@session", pod_session(ctx.view))  # type: ignore[no-any-return]


def _argv(ctx: EventContext) -> Any:
    session = _session(ctx)
    return session.get("command", UNSET) if session else UNSET


def _command(ctx: EventContext) -> Any:
    argv = _argv(ctx)
    return shlex.join(argv) if argv else UNSET


def _container(ctx: EventContext) -> Any:
    session = _session(ctx)
    return session.get("container", UNSET) if session else UNSET


def _ports(ctx: EventContext) -> Any:
    session = _session(ctx)
    return session.get("ports", UNSET) if session else UNSET


def _podspec(ctx: EventContext) -> Any:
    memo = ctx.memo("@podspec")
    if memo is not NOT_YET:
        return memo
    ref = ctx.view.objectRef
    value: Any = UNSET
    if ref:
        body = ctx.body("requestObject")
        value = body
        for key in _POD_SPEC_PATHS.get(ref.resource or "", _TEMPLATE_PATH):
            value = value.get(key, UNSET) if type(value) is dict else UNSET
        if type(value) is not dict:
            value = UNSET
    return ctx.remember("@podspec", value)


def _containers(ctx: EventContext) -> Any:
    spec = _podspec(ctx)
    if spec is UNSET:
        return UNSET
    found: list[Any] = []
    for key in _CONTAINER_LISTS:
        items = spec.get(key)
        if type(items) is list:
            found.extend(item for item in items if type(item) is dict)
    return found or UNSET


def _resource(ctx: EventContext) -> Any:
    ref = ctx.view.objectRef
    if not ref:
        return _path(ctx)
    name = ref.resource or ""
    group = ref.apiGroup or ""
    if not group and ref.apiVersion and "/" in ref.apiVersion:
        group = ref.apiVersion.rpartition("/")[0]
    if group:
        name = f"{name}.{group}"
    if ref.subresource:
        name = f"{name}/{ref.subresource}"
    return name or UNSET


def _time(ctx: EventContext) -> Any:
    seconds = ctx.event_time()
    return UNSET if seconds is None else format_time(seconds)


def _geo(ctx: EventContext) -> Any:
    intel = ctx.env.intel
    address = _source_ip(ctx)
    if intel is None or address is UNSET or _source_ip_public(ctx) is not True:
        return UNSET
    return intel.geo_of(address) or UNSET


def _risky(ctx: EventContext) -> Any:
    intel = ctx.env.intel
    address = _source_ip(ctx)
    if intel is None or address is UNSET or _source_ip_public(ctx) is not True:
        return UNSET
    return list(intel.risky_of(address)) or UNSET


class Computed(NamedTuple):
    get: Callable[[EventContext], Any]
    #: the body it reads (for the audit level a rule needs), if any
    body: str | None
    doc: str


COMPUTED: dict[str, Computed] = {
    "@user": Computed(_user, None, "acting user: impersonated user, else for a shared admin the user in the RBAC reason, else user.username"),
    "@user_kind": Computed(_user_kind, None, "serviceaccount, node, system, anonymous, human or unknown (of the authenticated user)"),
    "@impersonated": Computed(_impersonated, None, "impersonatedUser.username"),
    "@source_ip": Computed(_source_ip, None, "first address of sourceIPs (the client)"),
    "@source_ip_public": Computed(
        _source_ip_public, None, "true when the client address is public (not private, loopback, link-local, CGNAT or internal_cidrs)"
    ),
    "@code": Computed(_code, None, "responseStatus.code"),
    "@path": Computed(_path, None, "requestURI path, percent-decoded, without the query"),
    "@query": Computed(_query, None, "requestURI query parameters: name → list of decoded values"),
    "@argv": Computed(_argv, None, "exec/attach: every command= parameter, decoded, in order"),
    "@command": Computed(_command, None, "exec: @argv joined with shell quoting"),
    "@container": Computed(_container, None, "exec/attach/portforward: the container= parameter"),
    "@ports": Computed(_ports, None, "portforward: the ports= parameters"),
    "@podspec": Computed(_podspec, "requestObject", "pod spec of a Pod, PodTemplate, CronJob or workload template in requestObject"),
    "@containers": Computed(_containers, "requestObject", "containers, initContainers and ephemeralContainers of @podspec"),
    "@resource": Computed(_resource, None, "resource[.group][/subresource] (e.g. pods/exec, deployments.apps), or the path of a non-resource request"),
    "@time": Computed(_time, None, "event time, RFC 3339 UTC"),
    "@geo": Computed(_geo, None, "geoip answer for a public client address: country, country_name, region, city, asn, as_org"),
    "@risky": Computed(_risky, None, "names of the risky_cidrs lists holding the public client address"),
}

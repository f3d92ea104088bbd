"""The request attributes a policy is evaluated against, rebuilt from a recorded audit event.

kube-apiserver evaluates its policy on the *request* (authenticated user, RequestInfo derived from the URL),
not on the event. A recorded event carries most of that, with caveats handled here:

* user: `user.username`/`user.groups` — the authenticated user, never `impersonatedUser`. `user` missing,
  null or `{}` is "no user": rules with `users`/`userGroups` do not match it.
* resource vs non-resource: `objectRef` present means a resource request; without it the `requestURI` path is
  parsed with RequestInfo's rules (`parse_request_info`), so a hand-written event still evaluates correctly.
* apiGroup: `objectRef.apiGroup`; when absent and `objectRef.apiVersion` is `group/version` (v1alpha1 events and
  some third-party fixtures) the part before the last `/`.
* name: `objectRef.name` is back-filled from the body for creates on a collection, while the policy saw `""`.
  The name is therefore taken from the `requestURI` path (and for list/watch from a
  `fieldSelector=metadata.name=X` query parameter), falling back to `objectRef.name` only when the URI is not
  a resource path.
* path: `requestURI` cut at the first `?` and percent-decoded, as `req.URL.Path` is.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl, unquote

from kube_audit_shipper.process.policy.event import RecordedEvent

_API_PREFIXES = ("api", "apis")
_SPECIAL_VERBS = ("proxy", "watch")
_NAMESPACE_SUBRESOURCES = ("status", "finalize")
_LIST_VERBS = ("list", "watch")


class RequestAttributes(NamedTuple):
    """What `PolicyRule` matching looks at. `username is None` means the request had no user."""

    username: str | None
    groups: tuple[str, ...]
    verb: str
    is_resource: bool
    api_group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    path: str


class RequestInfo(NamedTuple):
    """The parts of kube-apiserver's RequestInfo a recorded event lets us rebuild."""

    is_resource: bool
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


NON_RESOURCE = RequestInfo(False)


def request_attributes(event: RecordedEvent, *, need_name: bool = True) -> RequestAttributes:
    """The attributes kube-apiserver evaluated its policy on for this event.

    `need_name=False` skips parsing the requestURI for the name when no rule has resourceNames (the name then
    cannot change the outcome and is left "").
    """
    view = event.view
    user = view.user
    username: str | None = None
    groups: tuple[str, ...] = ()
    if user:
        groups = tuple(user.groups) if user.groups else ()
        if user.username or groups:
            username = user.username or ""
    verb = view.verb or ""
    uri = view.requestURI or ""
    ref = view.objectRef
    if ref:
        api_group = ref.apiGroup or ""
        if not api_group and ref.apiVersion and "/" in ref.apiVersion:
            api_group = ref.apiVersion.rpartition("/")[0]
        name = ""
        if need_name:
            path, query = split_request_uri(uri)
            info = parse_request_info(path, verb, query)
            name = info.name if info.is_resource else ref.name or ""
        return RequestAttributes(
            username,
            groups,
            verb,
            True,
            api_group,
            ref.resource or "",
            ref.subresource or "",
            ref.namespace or "",
            name,
            "",
        )
    path, query = split_request_uri(uri)
    info = parse_request_info(path, verb, query)
    if info.is_resource:
        return RequestAttributes(username, groups, verb, True, info.api_group, info.resource, info.subresource, info.namespace, info.name, "")
    return RequestAttributes(username, groups, verb, False, "", "", "", "", "", path)


def split_request_uri(request_uri: str) -> tuple[str, str]:
    """(decoded path, raw query) of a requestURI."""
    path, _, query = request_uri.partition("?")
    return (unquote(path) if "%" in path else path), query


def parse_request_info(path: str, verb: str, query: str) -> RequestInfo:
    """RequestInfo of a decoded URL path, as `RequestInfoFactory.NewRequestInfo` derives it.

    `verb` is the recorded verb (the HTTP method is not logged); it only decides whether a `list`/`watch`
    takes its name from `fieldSelector=metadata.name=X`.
    """
    trimmed = path.strip("/")
    parts = trimmed.split("/") if trimmed else []
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return NON_RESOURCE
    prefix, parts = parts[0], parts[1:]
    api_group = ""
    if prefix == "apis":
        if len(parts) < 3:
            return NON_RESOURCE
        api_group, parts = parts[0], parts[1:]
    parts = parts[1:]  # the version
    special_verb = ""
    if parts[0] in _SPECIAL_VERBS:
        if len(parts) < 2:
            # kube-apiserver fails the request ("unable to determine kind and namespace"); it is a resource
            # request with nothing else known.
            return RequestInfo(True, api_group)
        special_verb, parts = parts[0], parts[1:]
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and special_verb != "proxy" else ""
    if not name and not special_verb and verb in _LIST_VERBS and query:
        name = _field_selector_name(query)
    return RequestInfo(True, api_group, resource, subresource, namespace, name)


def _field_selector_name(query: str) -> str:
    """The `metadata.name` a list/watch selects exactly with `fieldSelector`, else ""."""
    if "fieldSelector" not in query:
        return ""
    selector = None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "fieldSelector":
            selector = value
            break
    if not selector:
        return ""
    terms = _split_selector_terms(selector)
    if terms is None:
        return ""
    for term in terms:
        if not term:
            continue
        parsed = _split_selector_term(term)
        if parsed is None:
            return ""  # kube-apiserver: selector parse error → plain list, no name
        field, operator, value = parsed
        if field == "metadata.name" and operator in ("=", "=="):
            if value in (".", "..") or "/" in value or "%" in value:
                return ""  # not a valid path segment name (path.IsValidPathSegmentName)
            return value
    return ""


def _split_selector_terms(selector: str) -> list[str] | None:
    """Split on unescaped commas (`fields.ParseSelector`)."""
    terms: list[str] = []
    current: list[str] = []
    escaped = False
    for char in selector:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        return None
    terms.append("".join(current))
    return terms


def _split_selector_term(term: str) -> tuple[str, str, str] | None:
    """(field, operator, unescaped value) of one selector term; None when it cannot be parsed."""
    index = 0
    while index < len(term):
        if term[index] == "\\":
            index += 2
            continue
        for operator in ("!=", "==", "="):
            if term.startswith(operator, index):
                value = _unescape_selector_value(term[index + len(operator) :])
                if value is None:
                    return None
                return term[:index], operator, value
        index += 1
    return None


def _unescape_selector_value(value: str) -> str | None:
    out: list[str] = []
    escaped = False
    for char in value:
        if escaped:
            if char not in "\\,=":
                return None
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",=":
            return None
        else:
            out.append(char)
    return None if escaped else "".join(out)

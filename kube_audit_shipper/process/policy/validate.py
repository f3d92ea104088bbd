"""`ValidatePolicy`, as kube-apiserver runs it on every policy it loads.

Mirrors `k8s.io/apiserver/pkg/apis/audit/validation/validation.go` (1.36 rules: `group: "*"` allowed). Each
problem is one string that starts with the field path (`rules[2].nonResourceURLs[0]`) and reads like the
apiserver's field error. The loader adds the "0 rules" check; this function alone accepts an empty policy.
"""

from __future__ import annotations

import re

from kube_audit_shipper.process.policy.schema import LEVELS, STAGES, GroupResources, Policy, PolicyRule

#: Kubernetes' DNS-1123 subdomain (`validation.IsDNS1123Subdomain`).
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_SUBDOMAIN_MAX = 253
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation "
    "is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
#: `group: "*"` (any API group) is valid since Kubernetes 1.36.
ANY_GROUP = "*"


def _quote(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_quote(v) for v in value) + "]"
    return repr(value)


def _invalid(path: str, value: object, detail: str) -> str:
    return f"{path}: Invalid value: {_quote(value)}: {detail}"


def validate_policy(policy: Policy) -> list[str]:
    """Every validation error of `policy`, in rule order; empty when kube-apiserver would accept it."""
    problems = validate_omit_stages(policy.omit_stages, "omitStages")
    for index, rule in enumerate(policy.rules):
        problems.extend(validate_rule(rule, f"rules[{index}]"))
    return problems


def validate_rule(rule: PolicyRule, path: str) -> list[str]:
    """The errors of one rule; `path` is its field path, e.g. `rules[3]`."""
    problems = validate_level(rule.level, f"{path}.level")
    problems.extend(validate_non_resource_urls(rule.non_resource_urls, f"{path}.nonResourceURLs"))
    for index, entry in enumerate(rule.resources):
        problems.extend(validate_group_resources(entry, f"{path}.resources[{index}]"))
    problems.extend(validate_omit_stages(rule.omit_stages, f"{path}.omitStages"))
    if rule.non_resource_urls and (rule.resources or rule.namespaces):
        problems.append(
            _invalid(
                f"{path}.nonResourceURLs",
                rule.non_resource_urls,
                "rules cannot apply to both regular resources and non-resource URLs",
            )
        )
    return problems


def validate_level(level: str, path: str) -> list[str]:
    if level in LEVELS:
        return []
    if level == "":
        return [f"{path}: Required value"]
    supported = ", ".join(_quote(name) for name in LEVELS)
    return [f"{path}: Unsupported value: {_quote(level)}: supported values: {supported}"]


def validate_non_resource_urls(urls: tuple[str, ...], path: str) -> list[str]:
    problems: list[str] = []
    for index, url in enumerate(urls):
        if url == "*":
            continue
        if not url.startswith("/"):
            problems.append(_invalid(f"{path}[{index}]", url, "non-resource URL rules must begin with a '/' character"))
        if url and "*" in url[:-1]:
            problems.append(_invalid(f"{path}[{index}]", url, "non-resource URL wildcards '*' must be the final character of the rule"))
    return problems


def validate_group_name(group: str) -> list[str]:
    """Why `group` is not a valid API group name for a policy (empty list: valid)."""
    if group in ("", ANY_GROUP):
        return []
    messages = []
    if len(group) > _DNS1123_SUBDOMAIN_MAX:
        messages.append(f"must be no more than {_DNS1123_SUBDOMAIN_MAX} characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(group):
        messages.append(_DNS1123_SUBDOMAIN_MSG)
    return messages


def validate_group_resources(entry: GroupResources, path: str) -> list[str]:
    problems: list[str] = []
    messages = validate_group_name(entry.group)
    if messages:
        problems.append(_invalid(f"{path}.group", entry.group, ",".join(messages)))
    if entry.resource_names and not entry.resources:
        problems.append(_invalid(f"{path}.resourceNames", entry.resource_names, "using resourceNames requires at least one resource"))
    return problems


def validate_omit_stages(stages: tuple[str, ...], path: str) -> list[str]:
    return [_invalid(f"{path}[{index}]", stage, "allowed stages are " + ",".join(STAGES)) for index, stage in enumerate(stages) if stage not in STAGES]

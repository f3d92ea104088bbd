"""Read an audit Policy file the way kube-apiserver does (`LoadPolicyFromBytes`, 1.26+ semantics).

1. YAML (or JSON). Only the first document is read. Malformed YAML is an error.
2. Decoding is strict first; a strict-only failure (an unknown or duplicate field) makes kube-apiserver fall back
   to lenient decoding, which drops the unknown field and keeps the last duplicate. We do the same and report
   each one as a *warning* naming the field and the rule: a dropped selector silently widens the rule (e.g. the
   OpenShift profile's `resource:` typo makes the entry match every resource of its group).
3. A value of the wrong type (a string where a list is expected, a number where a string is) is an error, as it
   is for kube-apiserver's decoder. Null counts as absent.
4. `apiVersion` must be `audit.k8s.io/v1` and `kind` `Policy`; `v1beta1`/`v1alpha1` load with a deprecation
   warning (kube-apiserver 1.21-1.23 behaviour; 1.24+ refuses them).
5. `ValidatePolicy` (`kube_audit_shipper.process.policy.validate`), then "0 rules" is an error.

Every error is collected; `PolicyError` carries all of them.
"""

from __future__ import annotations

from typing import Any

import yaml

from kube_audit_shipper.errors import PolicyError
from kube_audit_shipper.process.policy.match import CompiledPolicy, compile_policy
from kube_audit_shipper.process.policy.schema import (
    API_VERSION,
    DEPRECATED_API_VERSIONS,
    KIND,
    GroupResources,
    Policy,
    PolicyRule,
)
from kube_audit_shipper.process.policy.validate import validate_policy

_POLICY_FIELDS = frozenset({"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"})
_RULE_FIELDS = frozenset(
    {
        "level",
        "users",
        "userGroups",
        "verbs",
        "resources",
        "namespaces",
        "nonResourceURLs",
        "omitStages",
        "omitManagedFields",
    }
)
_GROUP_RESOURCES_FIELDS = frozenset({"group", "resources", "resourceNames"})
_OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
_WIDENS = "; the rule now matches more requests than written"


class _PolicyLoader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]  # no stubs: SafeLoader is Any
    """SafeLoader without the YAML 1.1 timestamp resolver: Kubernetes' YAML-to-JSON step keeps dates as strings."""


_PolicyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_policy(path: str) -> tuple[CompiledPolicy, list[str]]:
    """Load, validate and compile the policy in `path`; return it with the loader's warnings.

    Raises `PolicyError` listing every problem (unreadable file, YAML, types, version, validation, no rules).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise PolicyError([f"cannot read the policy file: {exc.strerror or exc}"], source=path) from exc
    policy, warnings = parse_policy(data, source=path)
    return compile_policy(policy), warnings


def parse_policy(data: bytes | str, *, source: str | None = None) -> tuple[Policy, list[str]]:
    """Decode and validate a policy document; return it with the warnings. Raises `PolicyError`."""
    problems: list[str] = []
    warnings: list[str] = []
    document = _read_yaml(data, source, warnings)
    if document is None:
        raise PolicyError(["the policy file is empty", "loaded illegal policy with 0 rules"], source=source)
    if not isinstance(document, dict):
        raise PolicyError([f"the policy must be a YAML mapping, got {_kind(document)}"], source=source)
    api_version = _check_type_meta(document, problems, warnings)
    policy = _decode_policy(document, api_version, problems, warnings)
    problems.extend(validate_policy(policy))
    if not policy.rules:
        problems.append("loaded illegal policy with 0 rules")
    if problems:
        # The warnings often explain the errors (a misspelt `Level:` is an unknown field *and* a missing level).
        raise PolicyError(problems + [f"warning: {warning}" for warning in warnings], source=source)
    return policy, warnings


def _read_yaml(data: bytes | str, source: str | None, warnings: list[str]) -> Any:
    loader = _PolicyLoader(data)
    try:
        nodes: list[yaml.Node] = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                nodes.append(node)
        if not nodes:
            return None
        if len(nodes) > 1:
            warnings.append(f"only the first YAML document is read, as kube-apiserver does; {len(nodes) - 1} more ignored")
        _warn_duplicate_keys(nodes[0], "", warnings)
        return loader.construct_document(nodes[0])
    except yaml.YAMLError as exc:
        raise PolicyError([f"malformed YAML: {exc}"], source=source) from exc
    finally:
        loader.dispose()


def _warn_duplicate_keys(node: yaml.Node, path: str, warnings: list[str]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            if key in seen:
                warnings.append(f"{child}: duplicate field; the last value is used (lenient decoding)")
            seen.add(key)
            _warn_duplicate_keys(value_node, child, warnings)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _warn_duplicate_keys(item, f"{path}[{index}]", warnings)


def _check_type_meta(document: dict[Any, Any], problems: list[str], warnings: list[str]) -> str:
    api_version = document.get("apiVersion")
    kind = document.get("kind")
    if not isinstance(api_version, str) or not api_version or not isinstance(kind, str) or not kind:
        problems.append(f"unknown group version field in policy: apiVersion {api_version!r}, kind {kind!r}; expected apiVersion {API_VERSION} and kind {KIND}")
        return API_VERSION
    if api_version in DEPRECATED_API_VERSIONS:
        warnings.append(f"apiVersion {api_version} is deprecated (refused by kube-apiserver since 1.24), use {API_VERSION}; read with the same rule semantics")
    elif api_version != API_VERSION:
        problems.append(f"unknown group version field {api_version!r} in policy; expected {API_VERSION}")
    if kind != KIND:
        problems.append(f"kind {kind!r} is not {KIND!r}")
    return api_version


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _string(value: object, path: str, problems: list[str]) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    problems.append(f"{path}: expected a string, got {_kind(value)}")
    return ""


def _strings(value: object, path: str, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(f"{path}: expected a list of strings, got {_kind(value)}")
        return ()
    return tuple(_string(item, f"{path}[{index}]", problems) for index, item in enumerate(value))


def _boolean(value: object, path: str, problems: list[str]) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    problems.append(f"{path}: expected true or false, got {_kind(value)}")
    return None


def _fields(value: object, path: str, known: frozenset[str], problems: list[str], warnings: list[str], *, widens: bool) -> dict[Any, Any]:
    """`value` as a mapping (null → empty); unknown keys become warnings."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a mapping, got {_kind(value)}")
        return {}
    for key in value:
        if key not in known:
            where = f"{path}: unknown field {str(key)!r}" if path else f"unknown field {str(key)!r}"
            warnings.append(f"{where} ignored (kube-apiserver >= 1.26 drops it after strict decoding fails)" + (_WIDENS if widens else ""))
    return value


def _decode_policy(document: dict[Any, Any], api_version: str, problems: list[str], warnings: list[str]) -> Policy:
    top = _fields(document, "", _POLICY_FIELDS, problems, warnings, widens=False)
    _fields(top.get("metadata"), "metadata", _OBJECT_META_FIELDS, problems, warnings, widens=False)
    raw_rules = top.get("rules")
    rules: list[PolicyRule] = []
    if raw_rules is not None and not isinstance(raw_rules, list):
        problems.append(f"rules: expected a list of rules, got {_kind(raw_rules)}")
    elif raw_rules:
        rules = [_decode_rule(raw, f"rules[{index}]", problems, warnings) for index, raw in enumerate(raw_rules)]
    omit_managed_fields = _boolean(top.get("omitManagedFields"), "omitManagedFields", problems)
    return Policy(
        rules=tuple(rules),
        omit_stages=_strings(top.get("omitStages"), "omitStages", problems),
        omit_managed_fields=bool(omit_managed_fields),
        api_version=api_version,
    )


def _decode_rule(raw: object, path: str, problems: list[str], warnings: list[str]) -> PolicyRule:
    fields = _fields(raw, path, _RULE_FIELDS, problems, warnings, widens=True)
    raw_resources = fields.get("resources")
    resources: list[GroupResources] = []
    if raw_resources is not None and not isinstance(raw_resources, list):
        problems.append(f"{path}.resources: expected a list of group/resources entries, got {_kind(raw_resources)}")
    elif raw_resources:
        for index, entry in enumerate(raw_resources):
            resources.append(_decode_group_resources(entry, f"{path}.resources[{index}]", problems, warnings))
    return PolicyRule(
        level=_string(fields.get("level"), f"{path}.level", problems),
        users=_strings(fields.get("users"), f"{path}.users", problems),
        user_groups=_strings(fields.get("userGroups"), f"{path}.userGroups", problems),
        verbs=_strings(fields.get("verbs"), f"{path}.verbs", problems),
        resources=tuple(resources),
        namespaces=_strings(fields.get("namespaces"), f"{path}.namespaces", problems),
        non_resource_urls=_strings(fields.get("nonResourceURLs"), f"{path}.nonResourceURLs", problems),
        omit_stages=_strings(fields.get("omitStages"), f"{path}.omitStages", problems),
        omit_managed_fields=_boolean(fields.get("omitManagedFields"), f"{path}.omitManagedFields", problems),
    )


def _decode_group_resources(raw: object, path: str, problems: list[str], warnings: list[str]) -> GroupResources:
    fields = _fields(raw, path, _GROUP_RESOURCES_FIELDS, problems, warnings, widens=True)
    return GroupResources(
        group=_string(fields.get("group"), f"{path}.group", problems),
        resources=_strings(fields.get("resources"), f"{path}.resources", problems),
        resource_names=_strings(fields.get("resourceNames"), f"{path}.resourceNames", problems),
    )

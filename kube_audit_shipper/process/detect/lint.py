"""Which rules an audit Policy starves: the requests a rule watches are not recorded at a level that has the
fields the rule reads (or only at stages it never sees).

A rule's *level* is the least audit level that holds every path its condition, aggregate and dedup read:
`requestObject` (and `@podspec`, `@containers`) need Request, `responseObject` RequestResponse, anything else
Metadata. Its *requests* are read from its index: the verbs, resources and subresources its condition pins (a
rule that pins no resource matches any request and is not checked). Each request is put to the policy
(`kube_audit_shipper.process.policy`) as a person (`lint-user`, group system:authenticated) and as a service
account, in `default` and `kube-system` for namespaced resources (or the namespaces the rule names):

* `cannot fire`: no such request is recorded at the rule's level at a stage it evaluates;
* `misses some`: some are not (the message names which, and the policy rule that decides);
* `ok`: all are.
"""

from __future__ import annotations

from typing import NamedTuple

from kube_audit_shipper.process.detect.computed import COMPUTED
from kube_audit_shipper.process.detect.conditions import INDEX_PATHS, index_values
from kube_audit_shipper.process.detect.paths import PathError, parse_path
from kube_audit_shipper.process.detect.spec import EVALUATED_STAGES, RuleSpec, rule_paths
from kube_audit_shipper.process.policy.attributes import RequestAttributes
from kube_audit_shipper.process.policy.match import CompiledPolicy
from kube_audit_shipper.process.policy.schema import LEVELS, RANK_METADATA, RANK_REQUEST, RANK_REQUEST_RESPONSE

#: API group of the resources rules usually name (a rule can pin objectRef.apiGroup itself).
RESOURCE_GROUPS = {
    **dict.fromkeys(["pods", "services", "secrets", "configmaps", "nodes", "namespaces", "serviceaccounts", "events", "replicationcontrollers"], ""),
    **dict.fromkeys(["persistentvolumes", "persistentvolumeclaims", "endpoints", "podtemplates"], ""),
    **dict.fromkeys(["deployments", "daemonsets", "statefulsets", "replicasets", "controllerrevisions"], "apps"),
    **dict.fromkeys(["jobs", "cronjobs"], "batch"),
    **dict.fromkeys(["roles", "clusterroles", "rolebindings", "clusterrolebindings"], "rbac.authorization.k8s.io"),
    "certificatesigningrequests": "certificates.k8s.io",
    "customresourcedefinitions": "apiextensions.k8s.io",
    "ingresses": "networking.k8s.io",
    **dict.fromkeys(
        [
            "mutatingwebhookconfigurations",
            "validatingwebhookconfigurations",
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
            "mutatingadmissionpolicies",
            "mutatingadmissionpolicybindings",
        ],
        "admissionregistration.k8s.io",
    ),
}
CLUSTER_SCOPED = frozenset(
    {
        "namespaces",
        "nodes",
        "persistentvolumes",
        "clusterroles",
        "clusterrolebindings",
        "certificatesigningrequests",
        "customresourcedefinitions",
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
        "mutatingadmissionpolicies",
        "mutatingadmissionpolicybindings",
        "storageclasses",
    }
)
DEFAULT_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
_IDENTITIES = (
    ("a person", "lint-user", ("system:authenticated",)),
    ("a service account", "system:serviceaccount:default:lint", ("system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated")),
)


class LintFinding(NamedTuple):
    rule: str
    status: str  # "ok", "cannot fire", "misses some", "not checked"
    level: str  # the level the rule needs
    message: str


def needed_level(spec: RuleSpec) -> tuple[int, str]:
    """(rank, why) of the least audit level holding every path the rule's condition, aggregate and dedup read."""
    rank, why = RANK_METADATA, "reads only Metadata fields"
    for text in rule_paths_for_level(spec):
        try:
            path = parse_path(text)
        except PathError:
            continue
        body = COMPUTED[path.root].body if path.computed and path.root in COMPUTED else path.root
        if body == "responseObject" and rank < RANK_REQUEST_RESPONSE:
            rank, why = RANK_REQUEST_RESPONSE, f"reads {text}"
        elif body == "requestObject" and rank < RANK_REQUEST:
            rank, why = RANK_REQUEST, f"reads {text}"
    return rank, why


def rule_paths_for_level(spec: RuleSpec) -> list[str]:
    """Paths that decide whether a rule fires (output fields only fill the alert)."""
    return rule_paths(spec, with_fields=False)


def _requests(spec: RuleSpec) -> list[tuple[str, str, str, str, str]] | None:
    """(verb, group, resource, subresource, namespace) the rule can fire on, None when it pins no resource."""
    verbs, resources, subresources = (index_values(spec.match, path) for path in INDEX_PATHS)
    if resources is None:
        return None
    groups = index_values(spec.match, "objectRef.apiGroup")
    namespaces = index_values(spec.match, "objectRef.namespace")
    out: list[tuple[str, str, str, str, str]] = []
    for resource in sorted(resources):
        for group in sorted(groups) if groups is not None else [RESOURCE_GROUPS.get(resource, "")]:
            if resource in CLUSTER_SCOPED:
                spaces: list[str] = [""]
            elif namespaces is not None:
                spaces = sorted(namespaces)
            else:
                spaces = ["default", "kube-system"]
            for verb in sorted(verbs) if verbs is not None else DEFAULT_VERBS:
                for subresource in sorted(subresources) if subresources is not None else [""]:
                    out.extend((verb, group, resource, subresource, space) for space in spaces)
    return out


def lint_against_policy(specs: list[RuleSpec], policy: CompiledPolicy) -> list[LintFinding]:
    findings = []
    for spec in specs:
        if not spec.enabled:
            continue
        rank, why = needed_level(spec)
        level = LEVELS[rank]
        requests = _requests(spec)
        if requests is None:
            findings.append(LintFinding(spec.id, "not checked", level, "matches requests of any resource; fires on whatever the policy records"))
            continue
        missed: dict[str, list[tuple[str, str, str, str]]] = {}
        total = 0
        for verb, group, resource, subresource, namespace in requests:
            for who, username, user_groups in _IDENTITIES:
                total += 1
                attrs = RequestAttributes(username, user_groups, verb, True, group, resource, subresource, namespace, "", "")
                decision = policy.evaluate(attrs)
                stages_left = not set(EVALUATED_STAGES) <= decision.omit_stages
                if decision.level >= rank and stages_left:
                    continue
                recorded = LEVELS[decision.level] if stages_left else "no stage rules see"
                target = f"{resource}/{subresource}" if subresource else resource
                missed.setdefault(f"{decision.label} records it at {recorded}", []).append((verb, target, namespace, who))
        misses = sum(len(items) for items in missed.values())
        if not misses:
            findings.append(LintFinding(spec.id, "ok", level, f"needs {level} ({why}); recorded so"))
            continue
        status = "cannot fire" if misses == total else "misses some"
        details = "; ".join(f"{reason}: {_summary(items)}" for reason, items in missed.items())
        findings.append(LintFinding(spec.id, status, level, f"needs {level} ({why}); {details}"))
    return findings


def _summary(items: list[tuple[str, str, str, str]]) -> str:
    """`create/patch of pods, deployments in default, kube-system by a person`: the requests, condensed."""

    def joined(values: list[str]) -> str:
        return ", ".join(dict.fromkeys(values))

    verbs = "/".join(sorted({verb for verb, _, _, _ in items}))
    spaces = [namespace for _, _, namespace, _ in items if namespace]
    where = f" in {joined(spaces)}" if spaces else ""
    return f"{verbs} {joined([target for _, target, _, _ in items])}{where} by {joined([who for _, _, _, who in items])}"

"""The kube-apiserver audit Policy, re-applied by the agent to events already recorded.

Modules: `schema` (Policy types, levels, stages), `load` (read a Policy file as kube-apiserver does, every
error listed), `validate` (ValidatePolicy), `event` (an event line decoded lazily, bodies kept raw),
`attributes` (the request attributes rebuilt from an event), `match` (compiled first-match evaluation, with a
decision cache), `trim` (cut an event down to its effective level), `report` (`policy check` statistics).

Matching semantics (k8s.io/apiserver `pkg/audit/policy/checker.go`, 1.36):
rules are tried in order, the first match wins, no match is level None. Within a rule every populated selector
must match: `users` (exact name; no user never matches), `userGroups` (any group; no user never matches),
`verbs` (exact, no wildcard), then either `resources`/`namespaces` (resource requests only; `""` namespace
selects cluster-scoped and cluster-wide requests; group exact or `"*"`; resource `R`, `R/sub`, `*`, `*/sub`,
`R/*` which also matches plain `R`; `resourceNames` gate an entry's resources) or `nonResourceURLs`
(non-resource requests only; `*`, exact path, or `prefix*` string prefix). omitStages = policy ∪ rule;
omitManagedFields = the rule's value when set, else the policy's.
"""

from kube_audit_shipper.process.policy.load import load_policy, parse_policy
from kube_audit_shipper.process.policy.match import NO_MATCH, CompiledPolicy, Decision, DecisionCache, compile_policy, rule_label

__all__ = [
    "NO_MATCH",
    "CompiledPolicy",
    "Decision",
    "DecisionCache",
    "compile_policy",
    "load_policy",
    "parse_policy",
    "rule_label",
]

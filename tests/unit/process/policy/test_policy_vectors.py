"""The evaluation vectors of the reference spec §6.3-6.6 (upstream checker_test.go plus code-derived cases)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kube_audit_shipper.process.policy.attributes import RequestAttributes, request_attributes
from kube_audit_shipper.process.policy.event import decode_event
from kube_audit_shipper.process.policy.match import NO_MATCH, DecisionCache, compile_policy
from kube_audit_shipper.process.policy.schema import LEVELS, GroupResources, Policy, PolicyRule

TIM = "tim@k8s.io"
TIM_GROUPS = ("humans", "developers")
RBAC = "rbac.authorization.k8s.io"

# §6.1 requests
REQUESTS = {
    "NS": RequestAttributes(TIM, TIM_GROUPS, "get", True, "", "pods", "", "default", "busybox", ""),
    "CL": RequestAttributes(TIM, TIM_GROUPS, "get", True, RBAC, "clusterroles", "", "", "edit", ""),
    "NR": RequestAttributes(TIM, TIM_GROUPS, "get", False, "", "", "", "", "", "/logs/kubelet.log"),
    "SUB": RequestAttributes(TIM, TIM_GROUPS, "get", True, "", "pods", "log", "default", "busybox", ""),
    "ANON": RequestAttributes(None, (), "get", True, "", "pods", "", "default", "busybox", ""),
    "CRU": RequestAttributes(TIM, TIM_GROUPS, "update", True, RBAC, "clusterroles", "status", "", "somerole", ""),
}


def core(*resources: str, names: tuple[str, ...] = ()) -> GroupResources:
    return GroupResources(group="", resources=resources, resource_names=names)


# §6.2 rules
RULES = {
    "default": PolicyRule(level="Metadata"),
    "create": PolicyRule(level="Request", verbs=("create",)),
    "tims": PolicyRule(level="Metadata", users=(TIM,)),
    "humans": PolicyRule(level="Metadata", user_groups=("humans",)),
    "serviceAccounts": PolicyRule(level="Request", user_groups=("system:serviceaccounts",)),
    "getPods": PolicyRule(level="RequestResponse", verbs=("get",), resources=(core("pods"),)),
    "getPodLogs": PolicyRule(level="Request", verbs=("get",), resources=(core("pods/log"),)),
    "getPodWildcard": PolicyRule(level="Request", verbs=("get",), resources=(core("*"),)),
    "getStarLog": PolicyRule(level="Request", verbs=("get",), resources=(core("*/log"),)),
    "getPodsStar": PolicyRule(level="Request", verbs=("get",), resources=(core("pods/*"),)),
    "getClusterRoles": PolicyRule(
        level="RequestResponse",
        verbs=("get",),
        resources=(GroupResources(group=RBAC, resources=("clusterroles",)),),
        namespaces=("",),
    ),
    "anyGroupStatus": PolicyRule(level="RequestResponse", verbs=("update",), resources=(GroupResources(group="*", resources=("*/status",)),)),
    "getLogs": PolicyRule(level="RequestResponse", verbs=("get",), non_resource_urls=("/logs*",)),
    "getMetrics": PolicyRule(level="Request", verbs=("get",), non_resource_urls=("/metrics",)),
    "clusterRoleEdit": PolicyRule(
        level="Request",
        resources=(GroupResources(group=RBAC, resources=("clusterroles",), resource_names=("edit",)),),
    ),
    "omitRR": PolicyRule(level="Request", omit_stages=("RequestReceived",)),
    "onlyPanic": PolicyRule(level="Request", omit_stages=("RequestReceived", "ResponseStarted", "ResponseComplete")),
}

# §6.3: (vector number, request, rules in order, expected level)
LEVEL_VECTORS = [
    (1, "NS", ["default"], "Metadata"),
    (2, "NS", ["create"], "None"),
    (3, "NS", ["tims"], "Metadata"),
    (4, "NS", ["humans"], "Metadata"),
    (5, "NS", ["serviceAccounts"], "None"),
    (6, "NS", ["getPods"], "RequestResponse"),
    (7, "NS", ["getClusterRoles"], "None"),
    (8, "NS", ["getLogs"], "None"),
    (9, "NS", ["getMetrics"], "None"),
    (10, "NS", ["getMetrics", "serviceAccounts", "default"], "Metadata"),
    (11, "NS", ["getMetrics", "getPods", "default"], "RequestResponse"),
    (12, "NS", ["getPodLogs", "getPods"], "RequestResponse"),
    (13, "CL", ["default"], "Metadata"),
    (14, "CL", ["create"], "None"),
    (15, "CL", ["tims"], "Metadata"),
    (16, "CL", ["humans"], "Metadata"),
    (17, "CL", ["serviceAccounts"], "None"),
    (18, "CL", ["getPods"], "None"),
    (19, "CL", ["getClusterRoles"], "RequestResponse"),
    (20, "CL", ["clusterRoleEdit", "getClusterRoles"], "Request"),
    (21, "CL", ["getLogs"], "None"),
    (22, "CL", ["getMetrics"], "None"),
    (23, "CL", ["getMetrics", "serviceAccounts", "default"], "Metadata"),
    (24, "CL", ["getMetrics", "getClusterRoles", "default"], "RequestResponse"),
    (25, "CL", ["getPodLogs", "getPods"], "None"),
    (26, "NR", ["default"], "Metadata"),
    (27, "NR", ["create"], "None"),
    (28, "NR", ["tims"], "Metadata"),
    (29, "NR", ["humans"], "Metadata"),
    (30, "NR", ["serviceAccounts"], "None"),
    (31, "NR", ["getPods"], "None"),
    (32, "NR", ["getClusterRoles"], "None"),
    (33, "NR", ["getLogs"], "RequestResponse"),
    (34, "NR", ["getMetrics"], "None"),
    (35, "NR", ["getMetrics", "serviceAccounts", "default"], "Metadata"),
    (36, "NR", ["getLogs", "getClusterRoles", "default"], "RequestResponse"),
    (37, "NR", ["getPodLogs", "getPods"], "None"),
    (38, "SUB", ["getPodLogs", "getPods"], "Request"),
    (39, "SUB", ["getPodWildcard"], "Request"),
    (40, "SUB", ["getStarLog"], "Request"),
    (41, "SUB", ["getPodsStar"], "Request"),
    (42, "ANON", ["tims"], "None"),
    (43, "ANON", ["tims", "default"], "Metadata"),
    (44, "ANON", ["humans"], "None"),
    (45, "ANON", ["humans", "default"], "Metadata"),
    (46, "CRU", ["anyGroupStatus"], "RequestResponse"),
]


def make_policy(rule_names: list[str], *, omit_stages: tuple[str, ...] = (), omit_managed_fields: bool = False):
    return compile_policy(
        Policy(
            rules=tuple(RULES[name] for name in rule_names),
            omit_stages=omit_stages,
            omit_managed_fields=omit_managed_fields,
        )
    )


@pytest.mark.parametrize("policy_stages", [(), ("RequestReceived", "ResponseStarted")], ids=["no-omit", "omit-RR-RS"])
@pytest.mark.parametrize(("number", "request_id", "rule_names", "expected"), LEVEL_VECTORS, ids=lambda v: str(v))
def test_level_vectors(number, request_id, rule_names, expected, policy_stages):
    policy = make_policy(rule_names, omit_stages=policy_stages)
    decision = policy.evaluate(REQUESTS[request_id])
    assert LEVELS[decision.level] == expected, f"vector {number}"
    assert decision.omit_stages == frozenset(policy_stages)
    # The cached matcher must agree, on a cold and on a warm cache.
    cache = DecisionCache(policy)
    assert cache.evaluate(REQUESTS[request_id]) == decision
    assert cache.evaluate(REQUESTS[request_id]) == decision


def test_no_match_decision_is_level_none_labelled_no_match():
    decision = make_policy(["create"]).evaluate(REQUESTS["NS"])
    assert decision.rule_index is None
    assert decision.label == NO_MATCH
    assert decision.level == 0


# §6.4: (number, requests, policy omitStages, rules, level, effective omitStages)
OMIT_STAGES_VECTORS = [
    (47, ["NS", "CL", "NR"], (), ["omitRR", "getPods", "default"], "Request", {"RequestReceived"}),
    (
        48,
        ["NS", "CL", "NR"],
        (),
        ["onlyPanic", "getPods", "default"],
        "Request",
        {"RequestReceived", "ResponseStarted", "ResponseComplete"},
    ),
    (
        49,
        ["NS", "CL"],
        ("RequestReceived", "ResponseStarted"),
        ["omitRR", "getPods", "default"],
        "Request",
        {"RequestReceived", "ResponseStarted"},
    ),
    (
        50,
        ["NS", "CL", "NR"],
        ("RequestReceived", "ResponseStarted"),
        ["onlyPanic", "getPods", "default"],
        "Request",
        {"RequestReceived", "ResponseStarted", "ResponseComplete"},
    ),
    (
        51,
        ["NR"],
        ("RequestReceived", "ResponseStarted"),
        ["default", "omitRR", "getPods"],
        "Metadata",
        {"RequestReceived", "ResponseStarted"},
    ),
]


@pytest.mark.parametrize(("number", "requests", "policy_stages", "rule_names", "level", "stages"), OMIT_STAGES_VECTORS)
def test_omit_stages_vectors(number, requests, policy_stages, rule_names, level, stages):
    policy = make_policy(rule_names, omit_stages=policy_stages)
    for request_id in requests:
        decision = policy.evaluate(REQUESTS[request_id])
        assert LEVELS[decision.level] == level, (number, request_id)
        assert decision.omit_stages == stages, (number, request_id)


RR, RS, PANIC = "RequestReceived", "ResponseStarted", "Panic"


@pytest.mark.parametrize(
    ("policy_stages", "rule_stages", "union"),
    [
        ((), (), set()),
        ((RR,), (), {RR}),
        ((RR,), (RR,), {RR}),
        ((RR,), (RS,), {RR, RS}),
        ((RR, RR), (RR, RR), {RR}),
        ((RR, RS), (PANIC, RR), {RR, RS, PANIC}),
        ((), (RR,), {RR}),
    ],
)
def test_union_stages(policy_stages, rule_stages, union):
    policy = compile_policy(Policy(rules=(PolicyRule(level="Metadata", omit_stages=rule_stages),), omit_stages=policy_stages))
    assert policy.decisions[0].omit_stages == union


# §6.5: (number, policy omitManagedFields, rule omitManagedFields, effective)
@pytest.mark.parametrize(
    ("number", "policy_value", "rule_value", "effective"),
    [(52, False, None, False), (53, True, None, True), (54, True, False, False), (55, False, True, True)],
)
def test_omit_managed_fields_vectors(number, policy_value, rule_value, effective):
    rule = PolicyRule(level="RequestResponse", verbs=("get",), omit_managed_fields=rule_value)
    policy = compile_policy(Policy(rules=(rule,), omit_managed_fields=policy_value))
    decision = policy.evaluate(REQUESTS["NS"])
    assert LEVELS[decision.level] == "RequestResponse"
    assert decision.omit_managed_fields is effective, number


def test_omit_managed_fields_without_match_is_the_policy_value():
    policy = compile_policy(Policy(rules=(RULES["create"],), omit_managed_fields=True))
    assert policy.evaluate(REQUESTS["NS"]).omit_managed_fields is True


def single(rule: PolicyRule):
    return compile_policy(Policy(rules=(rule,)))


# §6.6 on attributes: (number, request, rule, matches)
DERIVED_ATTRIBUTE_VECTORS = [
    (56, REQUESTS["NS"], PolicyRule(level="Request", verbs=("get",), resources=(core("pods/*"),)), True),
    (57, REQUESTS["SUB"], PolicyRule(level="Request", resources=(core("pods"),)), False),
    (58, REQUESTS["NS"], PolicyRule(level="Request", resources=(core("*/*"),)), False),
    (58, REQUESTS["SUB"], PolicyRule(level="Request", resources=(core("*/*"),)), False),
    (
        59,
        RequestAttributes(TIM, (), "update", True, "apps", "deployments", "status", "ns", "d", ""),
        PolicyRule(level="Request", resources=(core("*/status"),)),
        False,
    ),
    (66, REQUESTS["NR"], PolicyRule(level="Request", namespaces=("",)), False),
    (68, REQUESTS["NS"], PolicyRule(level="Request", verbs=("*",)), False),
    (68, REQUESTS["NR"], PolicyRule(level="Request", verbs=("*",)), False),
]


@pytest.mark.parametrize(("number", "attrs", "rule", "matches"), DERIVED_ATTRIBUTE_VECTORS)
def test_derived_vectors_on_attributes(number, attrs, rule, matches):
    assert (single(rule).evaluate(attrs).rule_index == 0) is matches, number


def event(**fields) -> bytes:
    base = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "stage": "ResponseComplete"}
    return json.dumps({**base, **fields}).encode()


USER = {"username": "alice", "groups": ["system:authenticated"]}
LEADER_RULE = PolicyRule(level="None", resources=(core("configmaps", names=("controller-leader",)),))

# §6.6 on recorded events (attributes rebuilt from the JSON): (number, event line, rule, matches)
DERIVED_EVENT_VECTORS = [
    (
        60,
        event(verb="list", user=USER, requestURI="/api/v1/pods", objectRef={"resource": "pods", "apiVersion": "v1"}),
        PolicyRule(level="Request", namespaces=("",)),
        True,
    ),
    (
        61,
        event(
            verb="get",
            user=USER,
            requestURI="/api/v1/namespaces/kube-system",
            objectRef={"resource": "namespaces", "namespace": "kube-system", "name": "kube-system", "apiVersion": "v1"},
        ),
        PolicyRule(level="Request", namespaces=("kube-system",)),
        True,
    ),
    (
        62,
        event(verb="get", user=USER, requestURI="/apis"),
        PolicyRule(level="Request", non_resource_urls=("/api*",)),
        True,
    ),
    (
        63,
        event(verb="get", user=USER, requestURI="/healthz?verbose=1"),
        PolicyRule(level="Request", non_resource_urls=("/healthz",)),
        True,
    ),
    (
        64,
        event(
            verb="create",
            user=USER,
            requestURI="/api/v1/namespaces/default/configmaps",
            objectRef={
                "resource": "configmaps",
                "namespace": "default",
                "name": "controller-leader",
                "apiVersion": "v1",
            },
        ),
        LEADER_RULE,
        False,
    ),
    (
        65,
        event(
            verb="watch",
            user=USER,
            requestURI="/api/v1/namespaces/default/configmaps?watch=1&fieldSelector=metadata.name%3Dcontroller-leader",
            objectRef={"resource": "configmaps", "namespace": "default", "apiVersion": "v1"},
        ),
        LEADER_RULE,
        True,
    ),
    (
        66,
        event(verb="get", user=USER, requestURI="/version"),
        PolicyRule(level="Request", namespaces=("",)),
        False,
    ),
    (
        67,
        event(
            verb="get",
            user=USER,
            impersonatedUser={"username": "bob", "groups": ["system:authenticated"]},
            requestURI="/api/v1/namespaces/default/pods/p",
            objectRef={"resource": "pods", "namespace": "default", "name": "p", "apiVersion": "v1"},
        ),
        PolicyRule(level="Request", users=("bob",)),
        False,
    ),
    (
        68,
        event(verb="get", user=USER, requestURI="/api/v1/namespaces/default/pods/p", objectRef={"resource": "pods"}),
        PolicyRule(level="Request", verbs=("*",)),
        False,
    ),
]


@pytest.mark.parametrize(("number", "line", "rule", "matches"), DERIVED_EVENT_VECTORS)
def test_derived_vectors_on_recorded_events(number, line, rule, matches):
    policy = single(rule)
    attrs = request_attributes(decode_event(line), need_name=policy.uses_resource_names)
    assert (policy.evaluate(attrs).rule_index == 0) is matches, number


def test_impersonation_matches_the_authenticated_user():
    """Vector 67's other side: the rule naming the impersonator matches."""
    line = DERIVED_EVENT_VECTORS[7][1]
    policy = single(PolicyRule(level="Request", users=("alice",)))
    assert policy.evaluate(request_attributes(decode_event(line))).rule_index == 0


def test_decision_cache_keeps_unmentioned_users_apart_only_when_a_rule_names_them():
    policy = compile_policy(Policy(rules=(RULES["tims"], RULES["default"])))
    cache = DecisionCache(policy)
    other = REQUESTS["NS"]._replace(username="someone-else")
    assert cache.evaluate(other).rule_index == 1
    assert cache.evaluate(REQUESTS["NS"]).rule_index == 0
    assert cache.evaluate(REQUESTS["ANON"]).rule_index == 1
    assert policy.cache_key(other) == policy.cache_key(REQUESTS["ANON"])


def test_decision_cache_is_bounded():
    policy = compile_policy(Policy(rules=(RULES["getLogs"], RULES["default"])))
    cache = DecisionCache(policy, max_entries=4)
    for index in range(10):
        path = f"/logs/{index}" if index % 2 else f"/other/{index}"
        assert cache.evaluate(REQUESTS["NR"]._replace(path=path)).rule_index == (0 if index % 2 else 1)
        assert len(cache._cache) <= 4


def test_user_with_groups_but_no_name_is_a_user_named_empty():
    """Go matches `users: [""]` against a user whose name is empty; a missing user never matches."""
    policy = compile_policy(Policy(rules=(PolicyRule(level="Request", users=("",)), RULES["default"])))
    cache = DecisionCache(policy)
    nameless = decode_event(b'{"verb":"get","user":{"groups":["g"]},"objectRef":{"resource":"pods"}}')
    missing = decode_event(b'{"verb":"get","user":{},"objectRef":{"resource":"pods"}}')
    for _ in range(2):
        assert cache.evaluate_event(missing).rule_index == 1
        assert cache.evaluate_event(nameless).rule_index == 0


_names = st.sampled_from(["", "alice", "bob", "system:serviceaccount:kube-system:x"])
_groups = st.sampled_from(["g1", "g2", "system:authenticated"])
_namespaces = st.sampled_from(["", "default", "kube-system"])
_resources = st.sampled_from(["pods", "pods/log", "pods/*", "*", "*/status", "secrets", "deployments"])
_random_events = st.fixed_dictionaries(
    {},
    optional={
        "verb": st.sampled_from(["get", "list", "watch", "create", "update"]),
        "user": st.fixed_dictionaries({}, optional={"username": _names, "groups": st.lists(_groups, max_size=2)}),
        "requestURI": st.sampled_from(
            [
                "/api/v1/namespaces/default/pods/p",
                "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dp",
                "/apis/apps/v1/namespaces/kube-system/deployments/d/status",
                "/healthz?verbose",
                "/logs/x",
                "/api",
            ]
        ),
        "objectRef": st.fixed_dictionaries(
            {},
            optional={
                "resource": st.sampled_from(["pods", "deployments", "secrets"]),
                "subresource": st.sampled_from(["log", "status"]),
                "namespace": _namespaces,
                "name": st.sampled_from(["p", "d", ""]),
                "apiGroup": st.sampled_from(["", "apps"]),
                "apiVersion": st.sampled_from(["v1", "apps/v1"]),
            },
        ),
    },
)
_random_rules = st.builds(
    PolicyRule,
    level=st.sampled_from(LEVELS),
    users=st.lists(_names, max_size=2).map(tuple),
    user_groups=st.lists(_groups, max_size=2).map(tuple),
    verbs=st.lists(st.sampled_from(["get", "list", "create"]), max_size=2).map(tuple),
    resources=st.lists(
        st.builds(
            GroupResources,
            group=st.sampled_from(["", "apps", "*"]),
            resources=st.lists(_resources, max_size=2).map(tuple),
            resource_names=st.lists(st.sampled_from(["p", "d"]), max_size=1).map(tuple),
        ),
        max_size=2,
    ).map(tuple),
    namespaces=st.lists(_namespaces, max_size=2).map(tuple),
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    rules=st.lists(st.one_of(_random_rules, st.just(RULES["getLogs"])), min_size=1, max_size=5),
    lines=st.lists(_random_events, min_size=1, max_size=8),
)
def test_cached_event_decisions_equal_uncached_evaluation(rules, lines):
    policy = compile_policy(Policy(rules=tuple(rules)))
    cache = DecisionCache(policy)
    events = [decode_event(json.dumps(fields).encode()) for fields in lines]
    for event in events + events:
        assert cache.evaluate_event(event) == policy.evaluate(request_attributes(event))

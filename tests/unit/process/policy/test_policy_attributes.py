"""Request attributes rebuilt from recorded events (reference spec §1 and §7)."""

from __future__ import annotations

import json

import pytest

from kube_audit_shipper.errors import MalformedEventError
from kube_audit_shipper.process.policy.attributes import RequestInfo, parse_request_info, request_attributes, split_request_uri
from kube_audit_shipper.process.policy.event import decode_event

NON_RESOURCE = RequestInfo(False)


@pytest.mark.parametrize(
    ("path", "verb", "query", "expected"),
    [
        ("/api", "get", "", NON_RESOURCE),
        ("/api/v1", "get", "", NON_RESOURCE),
        ("/apis", "get", "", NON_RESOURCE),
        ("/apis/apps", "get", "", NON_RESOURCE),
        ("/apis/apps/v1", "get", "", NON_RESOURCE),
        ("/healthz", "get", "", NON_RESOURCE),
        ("/version", "get", "", NON_RESOURCE),
        ("/openapi/v2", "get", "", NON_RESOURCE),
        ("/metrics", "get", "", NON_RESOURCE),
        ("/api/v1/pods", "list", "", RequestInfo(True, "", "pods")),
        ("/api/v1/namespaces/ns1/pods/p1/log", "get", "", RequestInfo(True, "", "pods", "log", "ns1", "p1")),
        ("/api/v1/namespaces/foo", "get", "", RequestInfo(True, "", "namespaces", "", "foo", "foo")),
        ("/api/v1/namespaces/foo/status", "update", "", RequestInfo(True, "", "namespaces", "status", "foo", "foo")),
        (
            "/api/v1/namespaces/foo/finalize",
            "update",
            "",
            RequestInfo(True, "", "namespaces", "finalize", "foo", "foo"),
        ),
        ("/api/v1/namespaces", "list", "", RequestInfo(True, "", "namespaces")),
        ("/api/v1/namespaces/default/configmaps", "create", "", RequestInfo(True, "", "configmaps", "", "default")),
        (
            "/apis/apps/v1/namespaces/d/deployments/web/scale",
            "patch",
            "",
            RequestInfo(True, "apps", "deployments", "scale", "d", "web"),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/edit",
            "get",
            "",
            RequestInfo(True, "rbac.authorization.k8s.io", "clusterroles", "", "", "edit"),
        ),
        ("/api/v1/watch/namespaces/ns/pods", "watch", "", RequestInfo(True, "", "pods", "", "ns")),
        ("/api/v1/watch/namespaces/ns/pods/p", "watch", "", RequestInfo(True, "", "pods", "", "ns", "p")),
        # proxy never has a subresource
        ("/api/v1/proxy/namespaces/ns/pods/p/a/b", "proxy", "", RequestInfo(True, "", "pods", "", "ns", "p")),
        ("/api/v1/namespaces/ns/pods/p/proxy/a/b", "get", "", RequestInfo(True, "", "pods", "proxy", "ns", "p")),
        ("/api/v1/namespaces/ns/pods/p/exec", "create", "command=ls", RequestInfo(True, "", "pods", "exec", "ns", "p")),
        ("/api/v1/watch", "watch", "", RequestInfo(True, "")),
        # fieldSelector names a single object for list/watch
        (
            "/api/v1/namespaces/d/configmaps",
            "watch",
            "watch=1&fieldSelector=metadata.name%3Dleader",
            RequestInfo(True, "", "configmaps", "", "d", "leader"),
        ),
        (
            "/api/v1/namespaces/d/configmaps",
            "list",
            "fieldSelector=metadata.name%3D%3Dleader%2Cfoo%3Dbar",
            RequestInfo(True, "", "configmaps", "", "d", "leader"),
        ),
        (
            "/api/v1/namespaces/d/configmaps",
            "list",
            "fieldSelector=foo%3Dbar%2Cmetadata.name%3Dleader",
            RequestInfo(True, "", "configmaps", "", "d", "leader"),
        ),
        (
            "/api/v1/namespaces/d/configmaps",
            "list",
            "fieldSelector=metadata.name%21%3Dleader",
            RequestInfo(True, "", "configmaps", "", "d"),
        ),
        (
            "/api/v1/namespaces/d/configmaps",
            "list",
            "fieldSelector=metadata.name%3D..",
            RequestInfo(True, "", "configmaps", "", "d"),
        ),
        (
            "/api/v1/namespaces/d/configmaps",
            "list",
            "fieldSelector=metadata.name%3Da%5C",
            RequestInfo(True, "", "configmaps", "", "d"),
        ),
        # only list/watch read the selector
        (
            "/api/v1/namespaces/d/configmaps",
            "create",
            "fieldSelector=metadata.name%3Dleader",
            RequestInfo(True, "", "configmaps", "", "d"),
        ),
    ],
)
def test_parse_request_info(path, verb, query, expected):
    assert parse_request_info(path, verb, query) == expected


def test_split_request_uri_decodes_the_path_only():
    assert split_request_uri("/logs/a%20b.log?x=%20") == ("/logs/a b.log", "x=%20")
    assert split_request_uri("/healthz") == ("/healthz", "")


def attrs(fields: dict, need_name: bool = True):
    return request_attributes(decode_event(json.dumps(fields).encode()), need_name=need_name)


def test_user_and_groups_are_the_authenticated_ones():
    a = attrs(
        {
            "verb": "get",
            "user": {"username": "alice", "groups": ["g1", "g2"], "extra": {"x": ["y"]}},
            "impersonatedUser": {"username": "bob", "groups": ["g3"]},
            "requestURI": "/version",
        }
    )
    assert (a.username, a.groups, a.verb, a.is_resource, a.path) == ("alice", ("g1", "g2"), "get", False, "/version")


@pytest.mark.parametrize("user", [None, {}, "alice", [], {"username": ""}, {"uid": "1"}])
def test_no_user(user):
    fields = {"verb": "get", "requestURI": "/version"}
    if user is not None:
        fields["user"] = user
    assert attrs(fields).username is None


def test_user_with_odd_types_is_read_leniently():
    a = attrs({"user": {"username": "alice", "groups": ["g", 3, None]}, "requestURI": "/"})
    assert a.username == "alice" and a.groups == ("g",)


def test_v1alpha1_style_object_ref_group_comes_from_api_version():
    a = attrs({"verb": "create", "objectRef": {"resource": "cronjobs", "apiVersion": "batch/v1"}})
    assert (a.is_resource, a.api_group, a.resource) == (True, "batch", "cronjobs")
    a = attrs({"verb": "get", "objectRef": {"resource": "pods", "apiVersion": "v1"}})
    assert a.api_group == ""


def test_name_comes_from_the_uri_not_the_back_filled_object_ref():
    fields = {
        "verb": "create",
        "requestURI": "/api/v1/namespaces/default/configmaps",
        "objectRef": {"resource": "configmaps", "namespace": "default", "name": "controller-leader"},
    }
    assert attrs(fields).name == ""
    assert attrs(fields, need_name=False).name == ""
    fields["requestURI"] = "/api/v1/namespaces/default/configmaps/controller-leader"
    assert attrs(fields).name == "controller-leader"


def test_name_falls_back_to_object_ref_without_a_resource_uri():
    fields = {"verb": "get", "objectRef": {"resource": "pods", "namespace": "d", "name": "p"}}
    assert attrs(fields).name == "p"


def test_resource_request_without_object_ref_is_parsed_from_the_uri():
    a = attrs({"verb": "get", "requestURI": "/apis/apps/v1/namespaces/d/deployments/web?pretty=1"})
    assert (a.is_resource, a.api_group, a.resource, a.namespace, a.name) == (True, "apps", "deployments", "d", "web")


def test_non_resource_path_is_decoded_and_without_query():
    a = attrs({"verb": "get", "requestURI": "/logs/kube%2Dapiserver.log?tail=1"})
    assert (a.is_resource, a.path) == (False, "/logs/kube-apiserver.log")


def test_partial_events_do_not_crash():
    a = attrs({})
    assert (a.username, a.verb, a.is_resource, a.path) == (None, "", False, "")
    a = attrs({"verb": 3, "requestURI": ["x"], "objectRef": "pods", "user": 7, "level": None})
    assert (a.verb, a.is_resource, a.path) == ("", False, "")
    a = attrs({"objectRef": {"resource": 5, "namespace": "d"}})
    assert (a.is_resource, a.resource, a.namespace) == (True, "", "d")


@pytest.mark.parametrize(
    "line",
    [b"", b"not json", b"[1, 2]", b'"event"', b"42", b"null", b'{"kind": "Event"', b'{"a": 1} trailing'],
)
def test_non_objects_are_malformed(line):
    with pytest.raises(MalformedEventError):
        decode_event(line)


def test_unknown_fields_keep_order_and_bom_is_tolerated():
    line = b'{"zeta":1,"kind":"Event","verb":"get","alpha":{"x":[1, 2]}}'
    event = decode_event(line)
    assert event.top is not None and list(event.top) == ["zeta", "kind", "verb", "alpha"]
    assert event.view.verb == "get"
    assert decode_event(b"\xef\xbb\xbf" + line).view.verb == "get"

"""`kube-audit-shipper sls ensure`: creates the logstore (30-day retention by default) and the audit JSON index if
missing, leaves existing ones alone (or completes the index with --update-index), and says what it did; errors
name what to fix. Run against the local SLS server, which checks every request with the SDK's signing code."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from aliyun.log import IndexConfig

from kube_audit_shipper import config as config_mod
from kube_audit_shipper.commands import sls_ensure
from kube_audit_shipper.errors import ConfigError
from kube_audit_shipper.sinks.sls import index as idx
from tests.support.sls_server import Logstore, SlsTestServer

PROJECT, LOGSTORE = "k8s-log-c0123", "audit-c0123"


@pytest.fixture
def sls_server_options() -> dict[str, Any]:
    return {"projects": {PROJECT: []}}


def write_config(tmp_path: Path, sls_server: SlsTestServer, **over: Any) -> Path:
    sink = {
        "name": "sls",
        "type": "sls",
        "endpoint": sls_server.url,
        "project": PROJECT,
        "logstore": LOGSTORE,
        "access_key_id": "${SLS_ACCESS_KEY_ID}",
        "access_key_secret": "${SLS_ACCESS_KEY_SECRET}",
        "compression": "lz4",
        "topic": "",
        "tags": {"cluster": "c0123"},
    }
    sink.update(over)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "sinks": [{"name": "archive", "type": "file", "path": str(tmp_path / "out")}, sink]}))
    return path


def ensure(path: Path, *argv: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setenv("SLS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("SLS_ACCESS_KEY_SECRET", "SECRET")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    sls_ensure.add_parser(sub)
    args = parser.parse_args(["sls", "ensure", "-c", str(path), *argv])
    out = io.StringIO()
    return sls_ensure.run(args, out), out.getvalue()


def test_creates_logstore_and_index_then_finds_them(tmp_path: Path, sls_server: SlsTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, sls_server)
    code, out = ensure(path, monkeypatch=monkeypatch)
    assert code == 0, out
    assert "logstore created (retention 30 days, 2 shards)" in out and "audit index created" in out
    store = sls_server.projects[PROJECT][LOGSTORE]
    assert store.ttl == 30 and store.index == idx.audit_index()
    parsed = IndexConfig()
    parsed.from_json(store.index)  # the SDK reads it
    keys = store.index["keys"]
    for key, sub in [("objectRef", "subresource"), ("user", "username"), ("annotations", "authorization.k8s.io/reason"), ("responseStatus", "code")]:
        assert keys[key]["type"] == "json" and keys[key]["json_keys"][sub]["doc_value"] is True
    assert keys["responseStatus"]["json_keys"]["code"]["type"] == "long"
    for key in ("verb", "stage", "auditID", "sourceIPs"):
        assert keys[key]["doc_value"] is True

    code, out = ensure(path, monkeypatch=monkeypatch)
    assert code == 0 and "logstore exists (retention 30 days" in out and "covers every audit key" in out
    # every request was signed (the server verified it) and named the project in x-log-project
    assert all(
        s.headers.get("x-log-project") == PROJECT and s.status == 200 for s in sls_server.seen if s.code not in ("LogStoreNotExist", "IndexConfigNotExist")
    )


def test_retention_and_shards_are_configurable_and_dry_run_changes_nothing(tmp_path: Path, sls_server: SlsTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, sls_server)
    code, out = ensure(path, "--dry-run", monkeypatch=monkeypatch)
    assert code == 0 and "would create logstore" in out and "would create the audit index" in out
    assert LOGSTORE not in sls_server.projects[PROJECT]
    code, out = ensure(path, "--ttl-days", "180", "--shards", "4", monkeypatch=monkeypatch)
    assert code == 0 and sls_server.projects[PROJECT][LOGSTORE].ttl == 180 and sls_server.projects[PROJECT][LOGSTORE].shard_count == 4


def test_an_existing_index_is_compared_and_only_completed_on_request(tmp_path: Path, sls_server: SlsTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = {
        "line": {"token": [","], "caseSensitive": False},
        "keys": {
            "verb": {"type": "text", "token": [","], "caseSensitive": True, "doc_value": True},
            "objectRef": {
                "type": "json",
                "token": [","],
                "caseSensitive": False,
                "doc_value": False,
                "index_all": True,
                "max_depth": -1,
                "json_keys": {"resource": {"type": "text", "doc_value": True}},
            },
            "custom": {"type": "long", "doc_value": True},
        },
    }
    sls_server.projects[PROJECT][LOGSTORE] = Logstore(LOGSTORE, ttl=90, index=json.loads(json.dumps(theirs)))
    path = write_config(tmp_path, sls_server)
    code, out = ensure(path, monkeypatch=monkeypatch)
    assert code == 0 and "retention 90 days" in out and "lacks:" in out and "objectRef.subresource" in out and "--update-index" in out
    assert sls_server.projects[PROJECT][LOGSTORE].index == theirs
    code, out = ensure(path, "--update-index", monkeypatch=monkeypatch)
    assert code == 0 and "index updated, added:" in out
    new = sls_server.projects[PROJECT][LOGSTORE].index
    assert new["keys"]["verb"] == theirs["keys"]["verb"] and new["keys"]["custom"] == theirs["keys"]["custom"]  # kept as they were
    assert new["keys"]["objectRef"]["json_keys"]["resource"] == theirs["keys"]["objectRef"]["json_keys"]["resource"]
    assert "subresource" in new["keys"]["objectRef"]["json_keys"] and idx.missing(new) == []


def test_errors_name_what_to_fix(tmp_path: Path, sls_server: SlsTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = ensure(write_config(tmp_path, sls_server, project="k8s-log-nope"), monkeypatch=monkeypatch)
    assert code == 1 and "ProjectNotExist" in out and "create the project first" in out
    code, out = ensure(write_config(tmp_path, sls_server, access_key_secret="wrong-secret"), monkeypatch=monkeypatch)
    assert code == 1 and "SignatureNotMatch" in out and "AKID" in out and "wrong-secret" not in out and "SECRET" not in out
    with pytest.raises(ConfigError, match="no sink of type sls named 'nope'"):
        ensure(write_config(tmp_path, sls_server), "--sink", "nope", monkeypatch=monkeypatch)


def test_clock_skew_is_corrected(tmp_path: Path, sls_server: SlsTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    sls_server.clock_offset_s = -5000
    code, out = ensure(write_config(tmp_path, sls_server), monkeypatch=monkeypatch)
    assert code == 0, out
    assert LOGSTORE in sls_server.projects[PROJECT]


def test_the_issue_config_example_validates() -> None:
    text = """
sinks:
  - name: sls
    type: sls
    endpoint: cn-hangzhou.log.aliyuncs.com   # or a URL such as http://127.0.0.1:8080
    project: k8s-log-c0123
    logstore: audit-c0123
    access_key_id: ${SLS_ACCESS_KEY_ID}
    access_key_secret: ${SLS_ACCESS_KEY_SECRET}
    compression: lz4            # zstd | none
    topic: ""
    tags: {cluster: c0123}
"""
    cfg = config_mod.parse(yaml.safe_load(text), env={"SLS_ACCESS_KEY_ID": "a", "SLS_ACCESS_KEY_SECRET": "b"})
    (sink,) = cfg.sinks
    assert sink.project == "k8s-log-c0123" and sink.compression == "lz4" and sink.tags == {"cluster": "c0123"}

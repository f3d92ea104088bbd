"""The audit Policy and enrichment applied by the running pipeline to real events."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from tests.support.corpus import REPO, corpus_lines, numbered_lines
from tests.support.harness import append, make_config, run_once, sink_lines

LEVELS = {"None": 0, "Metadata": 1, "Request": 2, "RequestResponse": 3}


def test_policy_trims_drops_counts_and_enriches(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    lines = numbered_lines(len(corpus_lines()))
    append(log, lines)
    policy = REPO / "config" / "policy" / "audit-policy.yaml"
    cfg = make_config(tmp_path, policy={"file": str(policy)}, node_name="cp-test", enrich={"static_fields": {"cluster_id": "c-1"}})
    agent = run_once(cfg)
    out = [msgspec.json.decode(x) for x in sink_lines(tmp_path / "out")]
    state = agent.metrics_state()
    dropped = sum(state.dropped.values())
    assert dropped > 0 and len(out) + dropped == len(lines)
    assert state.shipped["archive"][0] == len(out)
    by_id = {e["auditID"]: e for e in (msgspec.json.decode(x) for x in lines)}
    for event in out:
        original = by_id[event["auditID"]]
        assert event["node"] == "cp-test" and event["cluster_id"] == "c-1"
        assert "derived" in event
        if "level" in original:  # trimming never raises a level
            assert LEVELS[event["level"]] <= LEVELS[original["level"]]
        if event.get("level") == "Metadata":
            assert "requestObject" not in event and "responseObject" not in event
        secret_body = (event.get("objectRef") or {}).get("resource") == "secrets"
        if secret_body:
            assert "requestObject" not in event  # the sample policy keeps Secrets at Metadata
    # per-rule drop counters name the rule that decided
    assert all(rule.startswith("rule[") or rule == "no-match" for (_, rule) in state.dropped)


def test_invalid_policy_stops_run_with_every_error(tmp_path: Path) -> None:
    from kube_audit_shipper.app import Agent
    from kube_audit_shipper.errors import PolicyError

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Loud\n  - level: Metadata\n    resources: [{resourceNames: [x]}]\n")
    append(tmp_path / "log" / "audit.log", numbered_lines(3))
    cfg = make_config(tmp_path, policy={"file": str(bad)})
    import asyncio

    with pytest.raises(PolicyError) as info:
        asyncio.run(Agent(cfg).run())
    assert len([p for p in info.value.problems if not p.startswith("warning")]) >= 2

"""Unit tests for kube_audit_shipper.sinks.s3.keys: rendering, partitions, the listing prefix, this node's keys, event times."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from kube_audit_shipper.demo.events import AuditEventGenerator
from kube_audit_shipper.sinks.s3.keys import KeyTemplate, event_time, format_seq, safe_value
from tests.support.corpus import corpus_lines

DEFAULT = "audit/cluster={cluster_id}/dt=%Y-%m-%d/hour=%H/{node}-{first_ts}-{seq}.ndjson.zst"
T = datetime(2026, 11, 22, 9, 5, 7, 123456, tzinfo=UTC)


def test_default_template_renders_from_the_first_event_time() -> None:
    keys = KeyTemplate(DEFAULT, node="cp-1", fields={"cluster_id": "c0123"})
    key = keys.render(T, format_seq(42, 0x5F3A9C1E), {})
    assert key == "audit/cluster=c0123/dt=2026-11-22/hour=09/cp-1-20261122T090507Z-000042-5f3a9c1e.ndjson.zst"
    assert keys.partition(T) == "2026|11|22|09"
    assert keys.event_fields == ()
    assert keys.list_prefix() == "audit/cluster=c0123/dt="


def test_placeholders_not_in_key_fields_come_from_the_first_event() -> None:
    keys = KeyTemplate(DEFAULT, node="cp-1", fields={})
    assert keys.event_fields == ("cluster_id",)
    event = msgspec.json.encode({"cluster_id": "c-77", "kind": "Event", **msgspec.json.decode(corpus_lines()[0])})
    values = keys.values_from_event(event)
    assert values == {"cluster_id": "c-77"}
    assert "/cluster=c-77/" in keys.render(T, format_seq(1, 1), values)
    assert keys.values_from_event(corpus_lines()[0]) == {"cluster_id": "unknown"}  # no such field: visible, not silent
    assert keys.values_from_event(b"not json") == {"cluster_id": "unknown"}
    assert keys.list_prefix() == "audit/cluster="  # stops at the first value not known in advance


def test_unsafe_values_are_percent_encoded() -> None:
    assert safe_value("c0123") == "c0123"
    assert safe_value("a/b c") == "a%2Fb%20c"
    assert safe_value(7) == "unknown" and safe_value("") == "unknown"
    assert KeyTemplate("{node}/{seq}", node="we ird/node", fields={}).node == "we%20ird%2Fnode"


def test_template_without_time_has_one_partition_and_literal_percent() -> None:
    keys = KeyTemplate("logs/100%%/{node}/{seq}.ndjson.zst", node="n", fields={})
    assert keys.partition(T) == "" and keys.render(T, "000001-00000000", {}) == "logs/100%/n/000001-00000000.ndjson.zst"


def test_ours_matches_this_nodes_keys_only() -> None:
    keys = KeyTemplate(DEFAULT, node="cp-1", fields={"cluster_id": "c0123"})
    ours = keys.ours()
    assert ours is not None
    mine = keys.render(T, format_seq(7, 0xABCDEF01), {})
    other = KeyTemplate(DEFAULT, node="cp-1-b", fields={"cluster_id": "c0123"}).render(T, format_seq(7, 1), {})
    other_cluster = KeyTemplate(DEFAULT, node="cp-1", fields={"cluster_id": "c9"}).render(T, format_seq(7, 1), {})
    assert ours.fullmatch(mine) and not ours.fullmatch(other) and not ours.fullmatch(other_cluster)
    assert KeyTemplate("a/{seq}", node="n", fields={}).ours() is None  # no {node}: only staged keys are known as ours


def test_event_time_from_real_and_generated_events() -> None:
    gen = AuditEventGenerator(seed=3, start_time=T)
    line = gen.line()
    assert event_time(line) == datetime.fromisoformat(msgspec.json.decode(line)["stageTimestamp"].replace("Z", "+00:00"))
    for line in corpus_lines():  # test fixtures from several projects: some events carry no time at all
        event = msgspec.json.decode(line)
        t = event_time(line)
        assert (t is not None) == any(k in event for k in ("stageTimestamp", "requestReceivedTimestamp", "timestamp"))
        assert t is None or t.tzinfo is UTC
    assert event_time(b'{"requestReceivedTimestamp":"2026-11-22T09:05:07.000001Z"}') == datetime(2026, 11, 22, 9, 5, 7, 1, tzinfo=UTC)
    assert event_time(b'{"stageTimestamp":"2026-11-22T10:05:07+01:00"}') == datetime(2026, 11, 22, 9, 5, 7, tzinfo=UTC)
    assert event_time(b'{"stageTimestamp":12}') is None
    assert event_time(b"[1]") is None


@pytest.mark.parametrize("counter", [1, 999_999, 1_000_000])
def test_seq_sorts_by_counter_within_six_digits(counter: int) -> None:
    seq = format_seq(counter, 0)
    assert seq.split("-")[0].lstrip("0") == str(counter) and seq.endswith("-00000000")

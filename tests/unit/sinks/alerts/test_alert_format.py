"""sinks/alerts/format.py: decoding, times, ids, display fields, and the Falco-compatible JSON falcosidekick reads."""

from __future__ import annotations

import msgspec
import pytest

from kube_audit_shipper.delivery.contract import Rejected, Request
from kube_audit_shipper.model import alert_encoder
from kube_audit_shipper.sinks.alerts import format as alert_format
from tests.unit.sinks.alerts.alerts import exec_alert, public_failures_alert, records, secret_alert

# what falcosidekick's types.FalcoPayload has (falcosecurity/falcosidekick types/types.go), with its JSON names
FALCO_KEYS = {"time", "rule", "priority", "source", "hostname", "output", "output_fields", "tags"}
FALCO_PRIORITIES = {"Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug"}


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2026-11-22T10:00:00Z", 1795341600_000_000_000),
        ("2026-11-22T10:00:00.123456Z", 1795341600_123_456_000),
        ("2026-11-22T10:00:00.123456789Z", 1795341600_123_456_789),
        ("2026-11-22T18:00:00.5+08:00", 1795341600_500_000_000),
        ("2026-11-22T05:30:00-04:30", 1795341600_000_000_000),
        ("2026-11-22 10:00:00z", 1795341600_000_000_000),
    ],
)
def test_rfc3339_times_are_read_to_the_nanosecond(text: str, ns: int) -> None:
    assert alert_format.parse_time_ns(text) == ns


@pytest.mark.parametrize("text", ["", "yesterday", "2026-11-22T10:00:00", "2026-13-01T00:00:00Z", "2026-11-22T25:00:00Z", "2026-11-22T10:00:00.1234567890Z"])
def test_what_is_no_rfc3339_time_is_none(text: str) -> None:
    assert alert_format.parse_time_ns(text) is None


def test_times_are_written_as_go_writes_them() -> None:
    ns = 1795341600_120_000_000
    assert alert_format.format_time_ns(ns) == "2026-11-22T10:00:00.12Z"  # RFC3339Nano: trailing zeros cut
    assert alert_format.format_time_ns(ns, digits=9) == "2026-11-22T10:00:00.120000000Z"
    assert alert_format.format_time_ns(1795341600_000_000_000) == "2026-11-22T10:00:00Z"


def test_records_that_are_no_alert_are_named_with_a_reason() -> None:
    good = alert_encoder.encode(exec_alert(1))
    batch = [good, b"not json", b'{"rule": "x"}', b'{"rule":"x","severity":"fatal","time":"t","summary":"s","audit_ids":[]}', good]
    alerts, bad = alert_format.decode_all(batch)
    assert [i for i, _ in alerts] == [0, 4]
    assert sorted(bad) == [1, 2, 3]
    assert all(reason.startswith("invalid_alert: not an alert record") for reason in bad.values())
    assert "severity" in bad[3]


def test_an_invalid_record_becomes_a_request_that_is_rejected_without_io() -> None:
    (request,) = alert_format.invalid_requests({3: "invalid_alert: not an alert record: x"})
    assert request.indices == [3] and request.payload == b""
    with pytest.raises(alert_format.InvalidAlertError) as exc:
        alert_format.refuse_invalid(request)
    outcome = alert_format.invalid_outcome(request, exc.value)
    assert outcome == Rejected("invalid_alert: not an alert record: x", [3])
    assert alert_format.invalid_outcome(Request(b"x", [0]), exc.value) is None  # only for the requests it made
    alert_format.refuse_invalid(Request(b"x", [0]))  # any other request passes


def test_alert_key_is_the_alert_id_or_a_stable_digest_of_what_makes_the_detection() -> None:
    assert alert_format.alert_key(exec_alert(1)) == exec_alert(1).id
    a = exec_alert(1, id="")
    assert alert_format.alert_key(a) == alert_format.alert_key(exec_alert(1, id="", summary="other text"))
    assert alert_format.alert_key(a) != alert_format.alert_key(exec_alert(2, id=""))
    agg = public_failures_alert(1, id="")
    assert alert_format.alert_key(agg) != alert_format.alert_key(public_failures_alert(2, id=""))


def test_display_fields_are_one_line_bounded_and_typed() -> None:
    alert = exec_alert(
        1,
        fields={
            "command": ["sh", "-c", "echo a b"],
            "ok": True,
            "n": 3,
            "empty": "",
            "none": None,
            "nested": {"a": [1]},
            "long": "x" * 2000,
            "multi": "a\nb\tc",
        },
    )
    shown = dict(alert_format.display_fields(alert, limit=100))
    assert shown["command"] == "sh -c 'echo a b'"
    assert shown["ok"] == "true" and shown["n"] == "3" and shown["nested"] == '{"a":[1]}'
    assert "empty" not in shown and "none" not in shown
    assert len(shown["long"]) == 100 and shown["long"].endswith("…")
    assert shown["multi"] == "a b c"
    agg = dict(alert_format.display_fields(public_failures_alert(0)))
    assert agg["count"] == "42" and "300 s" in agg["window"]


def test_falco_record_has_falcos_shape_and_mapped_priority() -> None:
    for alert, priority in ((exec_alert(1), "Error"), (public_failures_alert(1), "Critical"), (secret_alert(1), "Warning")):
        rec = alert_format.falco_record(alert, hostname="node-x")
        assert set(rec) == FALCO_KEYS
        assert rec["priority"] == priority and rec["priority"] in FALCO_PRIORITIES
        assert rec["source"] == "k8s_audit" and rec["rule"] == alert.rule and rec["tags"] == alert.tags
        assert alert_format.parse_time_ns(rec["time"]) == alert_format.parse_time_ns(alert.time)
        assert len(rec["time"]) == len("2026-11-22T10:00:00.123456000Z")  # nanoseconds, as Falco writes them
        assert rec["output"].startswith(rec["time"][:-1] + "+0000: " + priority + " " + alert.summary)
        assert rec["hostname"] == (alert.node or "node-x")
    for severity, priority in alert_format.FALCO_PRIORITY.items():
        assert alert_format.falco_record(exec_alert(1, severity=severity), hostname="n")["priority"] == priority


def test_falco_output_fields_keep_ours_and_add_the_k8saudit_names() -> None:
    alert = exec_alert(3)
    fields = alert_format.falco_record(alert, hostname="n")["output_fields"]
    for name, value in alert.fields.items():
        assert fields[name] == value
    assert fields["ka.target.namespace"] == alert.fields["namespace"]
    assert fields["ka.user.name"] == alert.fields["user"]
    assert fields["ka.sourceips"] == alert.fields["source_ip"]
    assert fields["ka.useragent"] == alert.fields["user_agent"]
    assert fields["ka.response.code"] == 101
    assert fields["ka.auditid"] == alert.audit_ids[0] and fields["kas.alert_id"] == alert.id
    agg = alert_format.falco_record(public_failures_alert(2), hostname="n")["output_fields"]
    assert agg["kas.count"] == 42 and agg["kas.group"] == "198.51.100.3" and agg["kas.window.start"]


def test_convert_keeps_positions_and_native_records_byte_for_byte() -> None:
    batch = records([exec_alert(1), secret_alert(2)])
    batch.insert(1, b"garbage")
    native, bad = alert_format.convert(batch, "alert", hostname="n")
    assert native == batch and list(bad) == [1]
    falco, bad = alert_format.convert(batch, "falco", hostname="n")
    assert list(bad) == [1] and falco[1] == b"garbage"
    decoded = [msgspec.json.decode(falco[i]) for i in (0, 2)]
    assert [d["rule"] for d in decoded] == ["exec-into-container", "secret-read-by-human"]


def test_description_lists_fields_audit_ids_and_tags() -> None:
    text = alert_format.description(exec_alert(1))
    lines = text.splitlines()
    assert lines[0].startswith("namespace: ") and any(line.startswith("command: ") for line in lines)
    assert lines[-2].startswith("audit_ids: ") and lines[-1] == "tags: mitre:T1609, mitre:execution"

"""The end of the demo: the shipped summary from the agent's figures, and the alerts read back from the file alert
target, one line each (grouped when many), with text from events made harmless for a terminal."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import zstandard

from kube_audit_shipper.demo.incidents import Incident
from kube_audit_shipper.demo.request import Actor, ApiRequest
from kube_audit_shipper.demo.summary import Shipped, alert_lines, caught, printable, read_alerts, shipped_lines
from kube_audit_shipper.model import Alert
from kube_audit_shipper.obs.metrics import Snapshot

ACTOR = Actor({"username": "bob"}, ("10.0.0.1",), "kubectl", None)


def _alert(rule: str, time: str, summary: str, ids: list[str], severity: str = "high") -> Alert:
    return Alert(rule=rule, severity=severity, time=time, summary=summary, audit_ids=ids, id=f"{rule}:{ids[0]}")  # type: ignore[arg-type]


def test_alerts_are_read_back_from_every_finished_file_and_frame(tmp_path: Path) -> None:
    alerts = [_alert("exec-into-container", f"2026-11-22T10:00:0{i}.000000Z", f"alert {i}", [f"id-{i}"]) for i in range(5)]
    encoded = [msgspec.json.encode(a) + b"\n" for a in alerts]
    compressor = zstandard.ZstdCompressor()
    (tmp_path / "alerts-1.ndjson.zst").write_bytes(compressor.compress(b"".join(encoded[:2])) + compressor.compress(encoded[2]))  # two batches, two frames
    (tmp_path / "alerts-2.ndjson.zst").write_bytes(compressor.compress(encoded[3] + b'{"not": "an alert"}\n'))
    (tmp_path / ".alerts-3.ndjson.zst.tmp").write_bytes(compressor.compress(encoded[4]))  # not finished: not delivered yet
    assert read_alerts(tmp_path) == alerts[:4]
    assert read_alerts(tmp_path / "missing") == []


def test_each_alert_is_one_line_in_event_time_order_and_a_rule_with_many_is_one_line() -> None:
    alerts = [
        _alert("cluster-admin-binding", "2026-11-22T10:00:09.000000Z", "admin bound cluster-admin", ["b"], "critical"),
        _alert("secret-read-by-human", "2026-11-22T10:00:02.000000Z", "bob read a secret", ["s"], "medium"),
        *(_alert("port-forward", f"2026-11-22T10:00:0{i}.500000Z", f"forward {i}", [f"p{i}"], "medium") for i in range(5)),
    ]
    lines = alert_lines(alerts, 7, Path("/d/alerts"), [])
    assert lines == [
        "alerts: 7 delivered to the file alert target /d/alerts",
        "  medium    port-forward           5 alerts, the last: forward 4",
        "  medium    secret-read-by-human   bob read a secret",
        "  critical  cluster-admin-binding  admin bound cluster-admin",
    ]
    assert alert_lines([], 2, Path("/d/alerts"), []) == ["alerts: 0 delivered to the file alert target /d/alerts (2 raised)", "  none"]


def test_text_from_events_cannot_drive_the_terminal() -> None:
    hostile = "alice\x1b[2J\x1b]0;owned\x07 ran `sh`\r\u202eevil"
    assert printable(hostile) == "alice\\x1b[2J\\x1b]0;owned\\x07 ran `sh`\\r\\u202eevil"
    assert printable("ordinary text, ünïcode too") == "ordinary text, ünïcode too"
    line = alert_lines([_alert("exec-into-container", "2026-11-22T10:00:00.000000Z", hostile, ["x"])], 1, Path("/d"), [])[1]
    assert line.isprintable()


def test_each_incident_is_checked_against_the_alerts_on_its_own_requests() -> None:
    request = ApiRequest(ACTOR, "get", "pods")
    scan = Incident("a scan", ("public-access-failures", "forbidden-burst"), (request, request))
    read = Incident("a read", ("secret-read-by-human",), (request,))
    ids = {"a scan": ["s1", "s2"], "a read": ["r1"]}
    alerts = [
        _alert("public-access-failures", "2026-11-22T10:00:00.000000Z", "scan", ["x", "s2"]),
        _alert("secret-read-by-human", "2026-11-22T10:00:00.000000Z", "another read", ["r9"]),  # someone else's read
        _alert("forbidden-burst", "2026-11-22T10:00:00.000000Z", "burst", ["r1"]),  # not a rule of that incident
    ]
    found = caught(alerts, [scan, read], ids)
    assert [(c.incident.title, c.raised, c.missing) for c in found] == [
        ("a scan", frozenset({"public-access-failures"}), ["forbidden-burst"]),
        ("a read", frozenset(), ["secret-read-by-human"]),
    ]
    lines = alert_lines(alerts, 3, Path("/d"), found)
    assert lines[-3:] == [
        "  the 2 suspicious actions written among the normal traffic: 0 raised their alerts",
        "  not raised: forbidden-burst for a scan",
        "  not raised: secret-read-by-human for a read",
    ]


def test_the_shipped_summary_keeps_the_label_column_scripts_read(tmp_path: Path) -> None:
    state = Snapshot(events_read=3000, shipped={"archive": (3000, 3_900_000), "alerts": (5, 2000)}, deadlettered={"malformed": 0})
    lines = shipped_lines(state, Shipped(3000, 5_500_000, 1, 1, 262_144, 0.5, tmp_path), "archive")
    assert lines[0] == "shipped"
    counts = dict(re.findall(r"^  (events \w+|dead-lettered)\s+(\d+)$", "\n".join(lines), re.M))
    assert counts == {"events written": "3000", "events read": "3000", "events shipped": "3000", "dead-lettered": "0"}
    assert "  events shipped      3000" in lines and "  dead-lettered       0" in lines
    text = "\n".join(lines)
    assert "5.2 MiB recorded -> 3.7 MiB shipped (71%)" in text and "256.0 KiB in 1 zstd file(s), 21.0x smaller than recorded" in text
    assert "dropped by policy   0 (this demo's policy trims, it drops nothing)" in text and "6,000 events/s over 0.5 s" in text
    dropped = Snapshot(events_read=10, shipped={"archive": (7, 100)}, dropped={("policy_level_none", "rule[0]"): 3})
    assert "  dropped by policy   3" in shipped_lines(dropped, Shipped(10, 1000, 0, 0, 0, 0.0, tmp_path), "archive")

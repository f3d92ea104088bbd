"""`kube-audit-shipper report`: arguments, exit codes, the written file, and the policy figures of `policy check`."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import stat
from collections import Counter
from pathlib import Path

import pytest

from kube_audit_shipper.commands import report
from kube_audit_shipper.commands.policy_check import run_policy_check
from tests.support.corpus import POLICIES
from tests.unit.report import scenario

POLICY = POLICIES / "alibaba-ack-default-audit-policy.yaml"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kube-audit-shipper report")
    report.add_arguments(parser)
    return parser.parse_args(list(argv))


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _logs(tmp_path: Path) -> list[str]:
    plain = tmp_path / "audit.log"
    plain.write_bytes(b"\n".join(scenario.demo_lines(3000) + scenario.BAD_LINES) + b"\n")
    packed = tmp_path / "audit-2026-11-22T11-00-00.000.log.gz"
    packed.write_bytes(gzip.compress(b"\n".join(scenario.suspicious_lines(scenario.START.replace(hour=11))) + b"\n"))
    return [str(plain), str(packed)]


def test_writes_one_private_page_and_says_so(tmp_path: Path) -> None:
    logs = _logs(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "report.html"
    assert report.run(_args(*logs, "-o", str(target)), out, err) == report.EXIT_OK
    html = target.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and scenario.XSS_POD not in html
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".report-*"))  # the temporary file was renamed
    summary = out.getvalue()
    assert re.fullmatch(r"wrote \S+report\.html \([\d.]+ KiB\): [\d,]+ events from 2 log\(s\), 7 unreadable line\(s\) skipped\n", summary), summary
    progress = err.getvalue().splitlines()
    assert [line.split(":")[0] for line in progress] == [f"read {log}" for log in logs] and "\r" not in err.getvalue()


def test_progress_is_a_live_line_on_a_terminal_and_silent_with_quiet(tmp_path: Path) -> None:
    logs = _logs(tmp_path)
    tty = _Tty()
    assert report.run(_args(*logs, "-o", str(tmp_path / "r.html")), io.StringIO(), tty) == 0
    assert "\r" in tty.getvalue() and "read " in tty.getvalue()
    quiet = _Tty()
    assert report.run(_args(*logs, "-o", str(tmp_path / "r.html"), "-q"), io.StringIO(), quiet) == 0
    assert quiet.getvalue() == ""


def test_policy_coverage_has_the_figures_of_policy_check(tmp_path: Path) -> None:
    logs = _logs(tmp_path)
    target = tmp_path / "report.html"
    assert report.run(_args(*logs, "-o", str(target), "--policy", str(POLICY)), io.StringIO(), io.StringIO()) == 0
    checked = io.StringIO()
    assert run_policy_check(str(POLICY), logs, as_json=True, out=checked) == 0
    expected = json.loads(checked.getvalue())
    html = target.read_text(encoding="utf-8")
    section = html[html.index('id="policy"') :]
    for rule in expected["rules"]:
        row = re.search(rf"<td>{re.escape(rule['rule'])}</td><td>[^<]*</td><td class=\"num\" data-sort=\"(\d+)\">", section)
        assert row is not None, rule["rule"]
        assert int(row.group(1)) == rule["matched"], rule["rule"]
        kept = re.search(rf"<td>{re.escape(rule['rule'])}</td>(?:<td[^>]*>[^<]*</td>){{2}}<td class=\"num\" data-sort=\"(\d+)\">", section)
        assert kept is not None and int(kept.group(1)) == rule["events_after"], rule["rule"]
    assert f"{expected['total']['events_after']:,}" in section and f"of {expected['total']['events_before']:,}" in section


def test_since_and_until_select_the_window(tmp_path: Path) -> None:
    logs = _logs(tmp_path)
    out = io.StringIO()
    args = _args(*logs, "-o", str(tmp_path / "r.html"), "--since", "2026-11-22T11:00:00Z", "--until", "2026-11-22T12:00:00Z")
    assert report.run(args, out, io.StringIO()) == 0
    suspicious = len(scenario.suspicious_lines())
    assert re.search(rf"\): {suspicious} events from 2 log\(s\), 7 unreadable line\(s\) skipped, 3,000 outside the time window", out.getvalue()), out.getvalue()


def test_usage_errors_write_nothing(tmp_path: Path) -> None:
    logs = _logs(tmp_path)
    target = tmp_path / "r.html"
    bad_policy = tmp_path / "policy.yaml"
    bad_policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Loud\n")
    for argv, message in (
        (["--since", "last week"], "neither an RFC 3339 time"),
        (["--since", "1h", "--until", "2h"], "--since must be before --until"),
        (["--policy", str(bad_policy)], "is invalid"),
        (["--risky", str(tmp_path / "firehol_level1.netset")], "firehol_level1.netset"),
    ):
        err = io.StringIO()
        assert report.run(_args(*logs, "-o", str(target), *argv), io.StringIO(), err) == report.EXIT_USAGE, argv
        assert message in err.getvalue(), err.getvalue()
        assert not target.exists()


def test_an_unreadable_log_is_reported_and_the_others_still_are(tmp_path: Path) -> None:
    logs = _logs(tmp_path)
    target = tmp_path / "r.html"
    missing = str(tmp_path / "gone.log")
    assert report.run(_args(missing, *logs, "-o", str(target)), io.StringIO(), io.StringIO()) == report.EXIT_LOG_ERROR
    html = target.read_text(encoding="utf-8")
    input_panel = html[html.index('id="input"') :]
    assert "gone.log" in input_panel and "No such file" in input_panel
    assert "mallory-admin" in html  # the readable logs are in the report


def test_detection_hits_come_from_the_detect_engine(tmp_path: Path) -> None:
    """The same alerts as `kube-audit-shipper detect --json` on the same logs, counted per rule on the page."""
    pytest.importorskip("kube_audit_shipper.process.detect")
    from kube_audit_shipper.commands import detect

    logs = _logs(tmp_path)
    target = tmp_path / "r.html"
    args = _args(*logs, "-o", str(target))
    assert report.run(args, io.StringIO(), io.StringIO()) == 0
    parser = argparse.ArgumentParser()
    detect.add_arguments(parser)
    alerts = io.StringIO()
    assert detect.run(parser.parse_args(["--json", *logs]), alerts, io.StringIO()) == 0
    expected = Counter(json.loads(line)["rule"] for line in alerts.getvalue().splitlines())
    assert {"exec-into-container", "public-access-failures", "cluster-admin-binding", "external-ip-service"} <= set(expected)
    html = target.read_text(encoding="utf-8")
    panel = html[html.index('id="detections"') : html.index('id="cve-2020-8554"')]
    for rule, count in expected.items():
        row = re.search(
            rf"<td>{re.escape(rule)}</td><td data-sort=\"\w+\"><span class=\"tag \w+\">\w+</span></td><td class=\"num\" data-sort=\"(\d+)\">", panel
        )
        assert row is not None and int(row.group(1)) == count, rule


def test_risky_lists_flag_public_addresses(tmp_path: Path) -> None:
    pytest.importorskip("kube_audit_shipper.process.detect")
    logs = _logs(tmp_path)
    risky = tmp_path / "drop.netset"
    risky.write_text("# a FireHOL-style list\n185.220.101.0/24\n")
    target = tmp_path / "r.html"
    assert report.run(_args(*logs, "-o", str(target), "--risky", str(risky)), io.StringIO(), io.StringIO()) == 0
    html = target.read_text(encoding="utf-8")
    public = html[html.index('id="public-access"') : html.index('id="exec"')]
    row = public[public.index(f">{scenario.ATTACKER_IP}<") :].split("</tr>")[0]
    assert '<span class="tag risky">risky</span>' in row
    assert public.count('class="tag risky"') == 1  # only the listed address


def test_without_the_detection_package_the_page_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "_detect_command", lambda: None)
    logs = _logs(tmp_path)
    target = tmp_path / "r.html"
    assert report.run(_args(*logs, "-o", str(target)), io.StringIO(), io.StringIO()) == 0
    assert "Detection was not run: this build has no detection engine" in target.read_text(encoding="utf-8")
    err = io.StringIO()
    assert report.run(_args(*logs, "-o", str(target), "--geoip", "GeoLite2-City.mmdb"), io.StringIO(), err) == report.EXIT_USAGE
    assert "need detection's IP intelligence" in err.getvalue()

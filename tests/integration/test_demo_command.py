"""`kube-audit-shipper demo` as a newcomer runs it: every event shipped, the four suspicious actions raising their
rules through the real pipeline and delivered to the file alert target, a self-contained HTML report, and output
that stays clean in a pipe (plain lines, no INFO logs, no traceback) and on a terminal (one line redrawn)."""

from __future__ import annotations

import gzip
import html.parser
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kube_audit_shipper.demo.apiserver import list_backups
from kube_audit_shipper.demo.summary import read_alerts
from tests.support.corpus import REPO
from tests.support.harness import sink_lines

EXPECTED_RULES = {"exec-into-container", "secret-read-by-human", "public-access-failures", "forbidden-burst", "cluster-admin-binding"}
LOG_LINE = re.compile(r"^\S*\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\S* +(DEBUG|INFO|WARNING|ERROR|CRITICAL) ", re.M)


def _env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kube_audit_shipper", *args], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)


class _Page(html.parser.HTMLParser):
    """What a self-contained page must not have: anything loaded from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "data") and value and not value.startswith(("#", "data:")):
                self.external.append(f"<{tag} {name}={value}>")
            if name == "rel" and value == "stylesheet":
                self.external.append(f"<{tag} rel=stylesheet>")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    root = tmp_path_factory.mktemp("demo") / "run"
    return _demo("demo", "--events", "3000", "--dir", str(root)), root


def test_every_event_is_shipped_and_counted(run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    r, root = run
    assert r.returncode == 0, r.stdout + r.stderr
    counts = dict(re.findall(r"^  (events \w+|dead-lettered)\s+(\d+)$", r.stdout, re.M))
    assert counts == {"events written": "3000", "events read": "3000", "events shipped": "3000", "dead-lettered": "0"}
    log = root / "log" / "audit.log"
    backups = list_backups(log)
    assert backups and all(b.name.endswith(".gz") for b in backups)
    written = [json.loads(line)["auditID"] for b in backups for line in gzip.decompress(b.read_bytes()).splitlines()]
    written += [json.loads(line)["auditID"] for line in log.read_bytes().splitlines()]
    shipped = [json.loads(line) for line in sink_lines(root / "out")]
    assert len(written) == 3000 and sorted(e["auditID"] for e in shipped) == sorted(written)
    assert all(e["node"] == "demo-node" and "derived" in e and "managedFields" not in e.get("responseObject", {}).get("metadata", {}) for e in shipped)
    assert f"  rotations           {len(backups)} " in r.stdout
    assert "  dropped by policy   0 " in r.stdout


def test_the_suspicious_actions_raise_their_rules_and_the_alerts_are_delivered(run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    r, root = run
    delivered = read_alerts(root / "alerts")
    assert {a.rule for a in delivered} == EXPECTED_RULES and len(delivered) == len(EXPECTED_RULES)
    by_rule = {a.rule: a for a in delivered}
    assert by_rule["exec-into-container"].fields["command"] == "sh -c 'cat /var/run/secrets/kubernetes.io/serviceaccount/token; env | grep -i pass; exec sh'"
    assert by_rule["public-access-failures"].fields["ip"] == "185.220.101.47"
    section = r.stdout.split("\nalerts: ", 1)[1].split("\n\n", 1)[0].splitlines()
    assert section[0] == f"5 delivered to the file alert target {root / 'alerts'}"
    shown = {line.split()[1]: line.split()[0] for line in section[1:-1]}
    assert shown == {a.rule: a.severity for a in delivered}
    width = max(len(rule) for rule in EXPECTED_RULES) + 2
    for alert in delivered:
        assert f"  {alert.severity:<9} {alert.rule:<{width}}{alert.summary}" in section
    assert section[-1] == "  the 4 suspicious actions written among the normal traffic: 4 raised their alerts"


def test_the_report_is_one_self_contained_html_file_with_the_story(run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    r, root = run
    report = root / "report.html"
    assert f"  {report}: overview, resource operations, who, cost and policy; open it in a browser" in r.stdout.splitlines()
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.external == [] and {"html", "head", "body", "style", "script", "svg"} <= set(parser.tags)
    for text in ("185.220.101.47", "cluster-admin-binding", "payments-worker-credentials", "alice@example.com", "3,000"):
        assert text in page, text


def test_the_output_in_a_pipe_is_plain_and_free_of_info_logs_and_tracebacks(run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    r, _ = run
    assert "\r" not in r.stdout and "\x1b" not in r.stdout
    assert not LOG_LINE.search(r.stdout)
    assert not [m for m in LOG_LINE.finditer(r.stderr) if m.group(1) in ("DEBUG", "INFO")], r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    progress = [line for line in r.stdout.splitlines() if re.match(r"^ +\d+\.\ds  written ", line)]
    assert progress and progress[-1].endswith("written 3,000/3,000  shipped 3,000  rotations 1  alerts 5")


def test_on_a_terminal_one_line_is_redrawn(tmp_path: Path) -> None:
    main, sub = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kube_audit_shipper", "demo", "--events", "3000", "--dir", str(tmp_path / "run")],
        cwd=REPO,
        env=_env() | {"COLUMNS": "120", "LINES": "40", "PYTHONIOENCODING": "utf-8"},
        stdin=subprocess.DEVNULL,
        stdout=sub,
        stderr=sub,
    )
    os.close(sub)
    chunks = []
    while True:
        try:
            data = os.read(main, 1 << 16)
        except OSError:  # EIO: every writer of the terminal has gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode("utf-8")
    frames = re.findall(r"\r([^\r\n]*)\x1b\[K", text)
    assert frames and all("written " in f and "shipped " in f and "rotations " in f for f in frames if f)
    assert frames[-1].startswith("█" * 10) and "100%  written 3,000/3,000  shipped 3,000  rotations 1  alerts 5" in frames[-1]
    assert not re.search(r"^ +\d+\.\ds  written ", text, re.M)  # no plain progress lines on a terminal
    assert "  events shipped      3000" in text and "4 raised their alerts" in text


def test_a_directory_in_use_is_refused_and_a_tiny_run_still_reports(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "something").write_text("x")
    r = _demo("demo", "--events", "10", "--dir", str(tmp_path / "busy"))
    assert r.returncode == 2 and "is not an empty directory" in r.stderr and r.stdout == ""
    r = _demo("demo", "--events", "10", "--rate", "200", "--seed", "7", "--dir", str(tmp_path / "tiny"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "10 audit events to" in r.stdout and "200 events/s" in r.stdout
    assert "too few events for the suspicious actions: they need at least 17" in r.stdout and "  events shipped      10" in r.stdout
    assert (tmp_path / "tiny" / "report.html").is_file()


def test_verbose_shows_the_agent_log(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from kube_audit_shipper.obs import logs\n"
        "from kube_audit_shipper.commands.demo import run_demo\n"
        "logs.setup('info')\n"
        "sys.exit(run_demo(events=300, rate=0, directory=sys.argv[1], seed=1, out=sys.stdout, verbose=sys.argv[2] == 'v'))\n"
    )
    quiet = subprocess.run([sys.executable, "-c", script, str(tmp_path / "q"), "-"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    loud = subprocess.run([sys.executable, "-c", script, str(tmp_path / "v"), "v"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert not [m for m in LOG_LINE.finditer(quiet.stderr) if m.group(1) == "INFO"]
    assert [m for m in LOG_LINE.finditer(loud.stderr) if m.group(1) == "INFO"], loud.stderr

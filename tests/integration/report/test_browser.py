"""The report in a real browser: headless Chromium (Debian's package) loads the file with no console error, no
network request but the file itself, every tab renders its panels, sorting works, and a screenshot is a
non-blank PNG of the laptop-sized viewport.

Without Chromium: under CI=true the tests fail saying so (.ci/apt-packages installs it); elsewhere they skip.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_audit_shipper.commands import report
from tests.integration.report import png
from tests.integration.report.cdp import Browser, file_url, find_chromium
from tests.support.corpus import POLICIES, corpus_lines
from tests.unit.report import scenario

pytestmark = pytest.mark.integration

LAPTOP = (1366, 768)
SECTIONS = {
    "overview": [
        "Events over time",
        "Operations by kind of user",
        "Public-network access",
        "Command executions (exec, attach, port-forward)",
        "Resource deletions",
        "Secret access",
        "Detection hits by rule",
        "CVE-2020-8554 signals",
    ],
    "resources": ["Per resource type"],
    "who": ["Top users", "Top service accounts", "Top source IPs", "Top user agents"],
    "cost": ["Volume by level", "Volume by verb", "Volume by resource", "Volume by user", "Volume by stage", "Policy coverage", "Input"],
}

RENDERED = """
(() => {
  const out = {};
  for (const link of document.querySelectorAll('nav a')) {
    link.click();
    const id = link.getAttribute('href').slice(1);
    const section = document.getElementById(id);
    const box = section.getBoundingClientRect();
    const shown = [...document.querySelectorAll('section.tab')].filter(t => getComputedStyle(t).display !== 'none').map(t => t.id);
    out[id] = {
      height: box.height, width: box.width, shown: shown,
      panels: [...section.querySelectorAll('.panel > h3')].map(h => h.textContent),
      charts: [...section.querySelectorAll('svg')].filter(s => s.getBoundingClientRect().width > 0).length,
      rows: section.querySelectorAll('tbody tr').length,
      overflowX: document.documentElement.scrollWidth > window.innerWidth + 1,
    };
  }
  return out;
})()
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: the report's browser tests need Debian's chromium package (.ci/apt-packages)")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report over realistic logs: demo traffic, the real corpus, the suspicious (and hostile) events, bad lines."""
    folder = tmp_path_factory.mktemp("report")
    plain = folder / "audit.log"
    plain.write_bytes(b"\n".join([*scenario.demo_lines(20_000), *scenario.BAD_LINES, *corpus_lines()]) + b"\n")
    packed = folder / "audit-2026-11-22T12-00-00.000.log.gz"
    packed.write_bytes(gzip.compress(b"\n".join(scenario.suspicious_lines(scenario.START.replace(hour=11))) + b"\n"))
    target = folder / "report.html"
    args = [str(plain), str(packed), "-o", str(target), "--policy", str(POLICIES / "alibaba-ack-default-audit-policy.yaml"), "-q"]
    parser = __import__("argparse").ArgumentParser()
    report.add_arguments(parser)
    assert report.run(parser.parse_args(args), io.StringIO(), io.StringIO()) == report.EXIT_OK
    return target


@pytest.fixture
def browser(chromium: str) -> Iterator[Browser]:
    with Browser(chromium) as b:
        b.open_page(*LAPTOP)
        yield b


def test_loads_without_errors_or_requests_and_every_section_renders(browser: Browser, report_file: Path) -> None:
    url = file_url(report_file)
    browser.load(url)
    rendered = browser.evaluate(RENDERED)
    assert browser.problems() == []
    assert browser.requests() == [url]  # the file itself, nothing else
    assert browser.page_events("Page.javascriptDialogOpening") == []  # no alert() from a hostile string
    assert list(rendered) == list(SECTIONS)
    for section, panels in SECTIONS.items():
        got = rendered[section]
        assert got["shown"] == [section], got  # the tab shows exactly its own section
        assert got["height"] > 300 and got["width"] > 1000, (section, got)
        for title in panels:
            assert any(p.startswith(title) for p in got["panels"]), (section, title, got["panels"])
        assert got["charts"] > 0 and got["rows"] > 0, (section, got)
        assert not got["overflowX"], f"{section} is wider than a laptop screen"
    assert [p.split(":")[0] for p in rendered["resources"]["panels"][:4]] == ["Compute", "Network", "Storage", "Access control"]
    text = browser.evaluate("document.body.textContent")
    for payload in (scenario.XSS_UA, scenario.XSS_POD, scenario.XSS_USER):
        assert payload in text, payload
    assert browser.evaluate("document.querySelectorAll('img, iframe, object, embed').length") == 0


def test_tables_sort_by_the_clicked_column(browser: Browser, report_file: Path) -> None:
    browser.load(file_url(report_file))
    values = browser.evaluate(
        """
(() => {
  document.querySelector('nav a[href="#who"]').click();
  const table = document.querySelector('#who table.sortable');
  const th = table.querySelectorAll('th')[1];
  const column = () => [...table.tBodies[0].rows].map(r => +r.cells[1].getAttribute('data-sort'));
  th.click(); const up = column();
  th.click(); const down = column();
  return {up, down};
})()
"""
    )
    assert values["up"] == sorted(values["up"]) and values["down"] == sorted(values["down"], reverse=True)
    assert len(set(values["up"])) > 1
    assert browser.problems() == []


def test_screenshot_is_a_non_blank_laptop_sized_png(browser: Browser, report_file: Path, tmp_path: Path) -> None:
    browser.load(file_url(report_file))
    shot = tmp_path / "report.png"
    shot.write_bytes(browser.screenshot_png())
    width, height, rows = png.decode(shot.read_bytes())
    assert (width, height) == LAPTOP
    assert png.colours(rows) > 20  # text, cards, bars: far from a blank or single-colour page
    assert len(set(rows[::40])) > 10  # and not the same line repeated


def test_the_harness_sees_console_errors_and_requests(browser: Browser, tmp_path: Path) -> None:
    """The checks above can fail: a page that logs an error and fetches a URL is caught by both."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><title>x</title><script>console.error('boom')</script><img src='http://127.0.0.1:9/x.png'>")
    browser.load(file_url(bad))
    browser.wait_for(lambda e: e.get("method") == "Network.loadingFailed" or e.get("method") == "Log.entryAdded", "failed load")
    assert any("boom" in problem for problem in browser.problems())
    assert "http://127.0.0.1:9/x.png" in browser.requests()

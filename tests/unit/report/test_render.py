"""The page: hostile strings from the logs stay text, nothing is fetched, the script is the one the CSP allows."""

from __future__ import annotations

import base64
import hashlib
import re
from html import unescape
from html.parser import HTMLParser

from kube_audit_shipper.report import page
from kube_audit_shipper.report.aggregate import Aggregator
from kube_audit_shipper.report.render import render
from tests.unit.report import scenario

SVG_NAMESPACE = "http://www.w3.org/2000/svg"


class _Elements(HTMLParser):
    """Every start tag with its attributes, every script body, all text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._in_script else self.text).append(data)


def _page() -> tuple[str, _Elements]:
    a = Aggregator()
    for line in [*scenario.demo_lines(1500), *scenario.suspicious_lines(scenario.START.replace(minute=20))]:
        a.feed(line)
    a.finish()
    html = render(a, title='Audit <b>"report"</b>', detection_note="detection not connected")
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return html, parser


def test_hostile_strings_are_text_not_markup() -> None:
    html, parsed = _page()
    tags = {tag for tag, _ in parsed.tags}
    assert not tags & {"img", "iframe", "object", "embed", "b", "form", "input", "link", "base", "meta"} - {"meta"}
    assert [tag for tag, _ in parsed.tags].count("script") == 1
    for _, attrs in parsed.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), name  # no event handler attribute anywhere
            assert "javascript:" not in (value or "")
    text = "".join(parsed.text)
    for payload in (scenario.XSS_UA, scenario.XSS_USER, scenario.XSS_POD, *scenario.XSS_COMMAND[2:]):
        assert payload in text, payload  # shown, as text
    assert "\u0007" not in html and "\u202e" not in html  # control characters replaced
    assert 'Audit <b>"report"</b>' in text


def test_nothing_outside_the_file_is_referenced() -> None:
    html, parsed = _page()
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "action", "data", "poster", "srcset", "formaction", "xlink:href"):
            value = attrs.get(name)
            if value is not None:
                assert name == "href" and tag == "a" and value.startswith("#"), (tag, name, value)
    urls = set(re.findall(r"(?:https?:)?//[^\s\"'<>)]+", html))
    allowed = {SVG_NAMESPACE}
    text = "".join(parsed.text)
    # the only URLs are the SVG namespace and those an attacker wrote into the logs, shown as escaped text
    for url in urls - allowed:
        assert unescape(url) in text, url
    assert "url(" not in html and "@import" not in html


def test_the_content_policy_allows_exactly_the_inline_script() -> None:
    _, parsed = _page()
    (csp,) = [attrs["content"] for tag, attrs in parsed.tags if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"]
    assert csp is not None and "default-src 'none'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    (script,) = parsed.scripts
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp
    assert script == page.SCRIPT


def test_every_section_and_panel_is_on_the_page() -> None:
    html, parsed = _page()
    ids = {attrs.get("id") for _, attrs in parsed.tags}
    assert {"overview", "resources", "who", "cost"} <= ids
    assert {"events-trend", "user-kinds", "public-access", "exec", "deletions", "secrets", "detections", "cve-2020-8554", "rbac", "policy", "input"} <= ids
    assert {"category-compute", "category-network", "category-storage", "category-access-control", "resource-details"} <= ids
    assert html.count("<svg") > 10
    text = "".join(parsed.text)
    assert "detection not connected" in text
    assert "ClusterRole cluster-admin → User mallory@example.com" in text
    assert "spec.externalIPs: 8.8.8.8" in text

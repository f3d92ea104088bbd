"""Make the README's picture of the report: `python -m tests.integration.report.screenshot docs/report-screenshot.png`.

Six hours of demo traffic with the suspicious events in the middle, rendered by `kube-audit-shipper report`
and photographed by headless Chromium at a laptop's 1440×900 (the Overview tab).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from kube_audit_shipper.commands import report
from kube_audit_shipper.demo.events import AuditEventGenerator, EventMix
from tests.integration.report.cdp import Browser, file_url, find_chromium
from tests.unit.report import scenario

SIZE = (1440, 900)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("chromium is not installed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "audit.log"
        generator = AuditEventGenerator(11, start_time=scenario.START, mix=EventMix(events_per_second=2.0))
        lines = list(generator.lines(43_000))
        middle = len(lines) // 2
        lines[middle:middle] = scenario.suspicious_lines(scenario.START.replace(hour=13))
        log.write_bytes(b"\n".join(lines) + b"\n")
        page = Path(folder) / "report.html"
        options = argparse.ArgumentParser()
        report.add_arguments(options)
        report.run(options.parse_args([str(log), "-o", str(page), "-q"]), io.StringIO())
        with Browser(chromium) as browser:
            browser.open_page(*SIZE)
            browser.load(file_url(page))
            args.output.write_bytes(browser.screenshot_png())
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

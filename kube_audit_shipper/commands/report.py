"""`kube-audit-shipper report LOG... [-o report.html] [--since T] [--until T] [--policy FILE] [--geoip FILE] [--risky FILE]`

Reads recorded audit logs (plain, gzip, or the file sink's zstd NDJSON; in the order given) once, streaming,
and writes one self-contained HTML page with what ACK's audit reports show: the Overview (events and trend,
humans vs service accounts vs system components, public-network access, exec sessions with the full
command, deletions, secret access, detection hits, CVE-2020-8554 signals), Resource operations, Who, and Cost
and policy (with `--policy`, `policy check`'s per-rule figures for the same events). Progress on stderr:
a live line on a terminal, a line per log otherwise, nothing with `--quiet`.

Detection hits come from `process.detect`'s engine built exactly as `detect` builds it (its `-c`, `--rules`,
`--no-builtin` options are added here), and `--geoip`/`--risky` are read by detection's `SourceIntel`: the
seams are `detection_engine` and `ip_intelligence` below. Without the detection package the page says that
detection was not run, and `--geoip`/`--risky` are usage errors.

Exit codes: 0 written; 1 written, but a log could not be read to its end (what was read is in the report,
the error on its Input panel); 2 invalid arguments or policy, nothing written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import Any, TextIO

from kube_audit_shipper.errors import ConfigError, PolicyError
from kube_audit_shipper.model import Alert
from kube_audit_shipper.report.aggregate import Aggregator, LogSummary
from kube_audit_shipper.report.coverage import PolicyCoverage
from kube_audit_shipper.report.detection import AlertSource
from kube_audit_shipper.report.event import OVERSIZE
from kube_audit_shipper.report.inputs import LogFile, LogReadError, total_size_bytes
from kube_audit_shipper.report.intel import IpInfo, IpIntel
from kube_audit_shipper.report.markup import size
from kube_audit_shipper.report.progress import Progress
from kube_audit_shipper.report.render import DEFAULT_TITLE, render
from kube_audit_shipper.report.window import TimeWindow, parse_bound

EXIT_OK = 0
EXIT_LOG_ERROR = 1
EXIT_USAGE = 2
DEFAULT_OUTPUT = "audit-report.html"
#: lines between two progress checks (a check is a tell() and a clock read)
_PROGRESS_EVERY = 4096

#: Why detection hits are absent when the detection package is not installed (shown on the page).
NO_DETECTION = (
    "Detection was not run: this build has no detection engine (kube_audit_shipper.process.detect). "
    "The report takes its hits from the same engine as `kube-audit-shipper detect` when it is there."
)
_DETECT_PACKAGE = "kube_audit_shipper.process.detect"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `report` command's arguments (the CLI creates the subparser)."""
    parser.add_argument("logs", nargs="+", metavar="LOG", help="audit logs: plain, .gz, or the file sink's .ndjson.zst; read in this order")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT, metavar="FILE", help=f"the HTML file to write (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--since", metavar="TIME", help="only events at or after TIME: RFC 3339 (2026-11-22T10:00:00Z) or a duration back from now (24h, 7d)")
    parser.add_argument("--until", metavar="TIME", help="only events before TIME (same forms as --since)")
    parser.add_argument("--policy", metavar="FILE", help="an audit Policy: show what it would keep of these events, per rule (as `policy check`)")
    parser.add_argument(
        "--geoip",
        metavar="FILE",
        action="append",
        default=[],
        help="MaxMind-format database (GeoLite2, DB-IP Lite): country and ASN of public source IPs; repeatable",
    )
    parser.add_argument(
        "--risky", metavar="FILE", action="append", default=[], help="CIDR list (FireHOL, Spamhaus DROP format) that flags risky source IPs; repeatable"
    )
    parser.add_argument("--title", default=DEFAULT_TITLE, help=f"page title (default: {DEFAULT_TITLE!r})")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    detect = _detect_command()
    if detect is not None:  # the rules `detect` runs: -c (the agent config's detect: section), --rules, --no-builtin
        detect.add_rule_source_arguments(parser)


def _detect_command() -> Any:
    """`commands.detect` when the detection package is installed, else None."""
    try:
        from kube_audit_shipper.commands import detect
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.startswith((_DETECT_PACKAGE, "kube_audit_shipper.commands.detect")):
            return None
        raise
    return detect


class _EngineAlerts:
    """`report.detection.AlertSource` over `process.detect`'s engine, built exactly as `detect` builds it.

    The engine's aggregates fire when their threshold is crossed, within the line that crosses it (as in `detect`
    and `run`), so nothing is pending at the end of the input.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def feed(self, line: bytes) -> Iterable[Alert]:
        alerts: list[Alert] = self.engine.evaluate_line(line)
        return alerts

    def finish(self) -> Iterable[Alert]:
        return ()


class _SourceIntel:
    """`report.intel.IpIntel` over detection's `SourceIntel` (MaxMind databases, CIDR risk lists)."""

    def __init__(self, intel: Any) -> None:
        self.intel = intel

    def lookup(self, address: str) -> IpInfo | None:
        geo = self.intel.geo_of(address) or {}
        lists = self.intel.risky_of(address)
        if not geo and not lists:
            return None
        asn = geo.get("asn")
        return IpInfo(
            country=str(geo.get("country", "")),
            city=str(geo.get("city", "")),
            asn=asn if isinstance(asn, int) else None,
            as_org=str(geo.get("as_org", "")),
            risky=bool(lists),
            risk_source=", ".join(lists),
        )


def detection_engine(args: argparse.Namespace) -> tuple[AlertSource | None, str]:
    """The detection engine of `detect` (same rules, tuning and options), or None and why it was not run.

    Raises `kube_audit_shipper.errors.ConfigError` when the config or a rule file is invalid.
    """
    detect = _detect_command()
    if detect is None:
        return None, NO_DETECTION
    options = argparse.Namespace(config=getattr(args, "config", None), rules=getattr(args, "rules", []), no_builtin=getattr(args, "no_builtin", False))
    engine, _ = detect.load_engine(options)
    return _EngineAlerts(engine), ""


def ip_intelligence(args: argparse.Namespace) -> IpIntel | None:
    """Detection's offline IP intelligence from `--geoip` and `--risky`; None when neither is given.

    Raises ValueError (a usage error) when a file cannot be read or the detection package is not installed.
    """
    if not args.geoip and not args.risky:
        return None
    if _detect_command() is None:
        raise ValueError(f"--geoip and --risky need detection's IP intelligence ({_DETECT_PACKAGE}), which this build does not include")
    from kube_audit_shipper.process.detect.intel import IntelError, SourceIntel

    try:
        return _SourceIntel(SourceIntel(args.geoip, args.risky))
    except IntelError as exc:
        raise ValueError("; ".join(exc.problems)) from exc


def run(args: argparse.Namespace, out: TextIO, err: TextIO | None = None) -> int:
    """Write the report; return the exit code. `err` (default stderr) gets progress and problems."""
    err = sys.stderr if err is None else err
    now = time.time()
    try:
        since = parse_bound(args.since, now) if args.since else None
        until = parse_bound(args.until, now) if args.until else None
        window = TimeWindow(since, until)
        intel = ip_intelligence(args)
    except ValueError as exc:
        err.write(f"kube-audit-shipper report: {exc}\n")
        return EXIT_USAGE
    coverage = None
    if args.policy:
        try:
            coverage = PolicyCoverage(args.policy)
        except PolicyError as exc:
            err.write(f"kube-audit-shipper report: policy {args.policy} is invalid: {len(exc.problems)} problem(s)\n")
            err.writelines(f"  {problem}\n" for problem in exc.problems)
            return EXIT_USAGE
    try:
        alerts, detection_note = detection_engine(args)
    except ConfigError as exc:
        err.write(f"kube-audit-shipper report: {exc}\n")
        return EXIT_USAGE
    aggregator = Aggregator(window, alerts=alerts, coverage=coverage, intel=intel)
    progress = Progress(None if args.quiet else err, total_size_bytes(args.logs), live=not args.quiet and err.isatty())
    failed = False
    for path in args.logs:
        failed |= not _read(path, aggregator, progress)
    aggregator.finish()
    html = render(aggregator, title=args.title, detection_note=detection_note)
    try:
        written = _write(args.output, html)
    except OSError as exc:
        err.write(f"kube-audit-shipper report: cannot write {args.output}: {exc.strerror or exc}\n")
        return EXIT_LOG_ERROR
    skipped = aggregator.skipped_total
    out.write(
        f"wrote {args.output} ({size(written)}): {aggregator.events:,} events from {len(args.logs)} log(s)"
        + (f", {skipped:,} unreadable line(s) skipped" if skipped else "")
        + (f", {aggregator.outside:,} outside the time window" if window.bounded else "")
        + "\n"
    )
    return EXIT_LOG_ERROR if failed else EXIT_OK


def _read(path: str, aggregator: Aggregator, progress: Progress) -> bool:
    """Feed one log to the aggregator; False when it could not be read to its end."""
    log = LogFile(path)
    progress.file_started(path)
    lines = 0
    error = ""
    feed = aggregator.feed
    try:
        for line in log.lines(on_oversize=lambda: aggregator.skip(OVERSIZE)):
            feed(line)
            lines += 1
            if not lines % _PROGRESS_EVERY:
                progress.update(log.position_bytes, aggregator.events)
    except LogReadError as exc:
        error = str(exc).removeprefix(f"{path}: ")
    aggregator.add_log(LogSummary(path, log.format, log.size_bytes, lines, error))
    progress.file_done(path, log.size_bytes, lines, error)
    return not error


def _write(path: str, html: str) -> int:
    """Write atomically (a temporary file in the same directory, then rename); the size in bytes.

    The file keeps mkstemp's mode 0600: it lists commands, secret reads and addresses, for the eyes of its reader.
    """
    data = html.encode("utf-8", "replace")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return len(data)

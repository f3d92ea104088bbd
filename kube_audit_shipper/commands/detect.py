"""`kube-audit-shipper detect [--rules FILE]... [-c FILE] [--json] LOG...`: the detection engine over recorded logs.

Logs (plain or gzip, recognised by their magic bytes) are read in the order given, every line evaluated by the
same engine, rules and tuning the agent runs (`-c` reads the agent's config: its `detect:` section and the
identity settings of `enrich.derived`), so the alerts are those `run` raises on the same events. Without
`-c`: the built-in rules with default settings. `--rules` adds rule files (ours or Sigma).

Output: a table (time, severity, rule, summary) and a count; with `--json` one Alert a line, exactly as alert
targets receive it (`kube_audit_shipper.model.alert_encoder`). Exit codes: 0 done; 1 a log could not be read
(the others are still read); 2 the config or a rule file is invalid (every error printed).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import msgspec

from kube_audit_shipper.errors import ConfigError
from kube_audit_shipper.model import Alert, alert_encoder
from kube_audit_shipper.process.detect.build import RuleCatalog, build_engine
from kube_audit_shipper.process.detect.config import DetectConfig
from kube_audit_shipper.process.detect.engine import DetectionEngine
from kube_audit_shipper.report.inputs import LogFile, LogReadError

EXIT_OK = 0
EXIT_LOG_ERROR = 1
EXIT_INVALID = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_rule_source_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one alert per line, as JSON (the shape alert targets receive)")
    parser.add_argument("logs", nargs="+", metavar="LOG", help="audit log files, plain or .gz, read in this order")


def add_rule_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the rules (shared with `rules list|lint`)."""
    parser.add_argument("-c", "--config", help="the agent's config file: its detect: section (rules, tuning, exceptions, geoip) applies")
    parser.add_argument("--rules", action="append", default=[], metavar="FILE", help="a rule file (ours or Sigma); repeatable")
    parser.add_argument("--no-builtin", action="store_true", help="leave the built-in rules out")


def load_engine(args: argparse.Namespace) -> tuple[DetectionEngine, RuleCatalog]:
    """The engine the options describe. Raises ConfigError (or its RulesError) listing every problem."""
    settings: dict[str, Any] = {}
    config = DetectConfig()
    if args.config:
        from kube_audit_shipper.config import load

        root = load(args.config)
        config = root.detect
        derived = root.enrich.derived
        settings = {"shared_admin_users": derived.shared_admin_users, "system_user_prefixes": derived.system_user_prefixes}
    if args.no_builtin:
        config = msgspec.structs.replace(config, builtin_rules=False)
    return build_engine(config, extra_rule_files=args.rules, **settings)


def detect_logs(engine: DetectionEngine, paths: list[str], on_alert: Any, err: TextIO) -> int:
    """Evaluate every line of `paths` in order (plain, gzip, or the file sink's zstd: read as `report` reads
    them), calling `on_alert(alert)`; the exit code."""
    code = EXIT_OK
    for path in paths:
        log_file = LogFile(path)
        try:
            for line in log_file.lines():
                for alert in engine.evaluate_line(line):
                    on_alert(alert)
        except LogReadError as exc:
            err.write(f"kube-audit-shipper detect: {exc}\n")
            code = EXIT_LOG_ERROR
        if log_file.oversize_lines:
            err.write(f"kube-audit-shipper detect: {path}: {log_file.oversize_lines} line(s) over {log_file.max_line_bytes} bytes skipped\n")
    return code


def run(args: argparse.Namespace, out: TextIO, err: TextIO = sys.stderr) -> int:
    try:
        engine, _ = load_engine(args)
    except ConfigError as exc:
        err.write(f"kube-audit-shipper detect: {exc}\n")
        return EXIT_INVALID
    if args.json:

        def emit(alert: Alert) -> None:
            out.write(alert_encoder.encode(alert).decode())
            out.write("\n")

        return detect_logs(engine, args.logs, emit, err)
    alerts: list[Alert] = []
    code = detect_logs(engine, args.logs, alerts.append, err)
    out.write(render_table(alerts))
    stats = engine.stats
    out.write(f"{len(alerts)} alert(s) from {stats.events + stats.skipped_stage} event(s)")
    if stats.undecodable:
        out.write(f", {stats.undecodable} line(s) not audit events")
    errors = sum(stats.errors.values())
    if errors:
        out.write(f", {errors} rule error(s) contained ({', '.join(f'{rule}: {n}' for rule, n in sorted(stats.errors.items()))})")
    out.write("\n")
    return code


def render_table(alerts: list[Alert]) -> str:
    if not alerts:
        return ""
    rows = [("TIME", "SEVERITY", "RULE", "SUMMARY")] + [(alert.time, alert.severity, alert.rule, alert.summary) for alert in alerts]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "".join(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}\n" for row in rows)

"""`kube-audit-shipper rules list|lint`: the detection rules the agent would run, and what is wrong with them.

* `rules list [-c FILE] [--rules FILE]... [--json]`: every rule (built-in, rule files, Sigma): id, severity,
  enabled, kind, tags and where it comes from, after the config's tuning.
* `rules lint [-c FILE] [--rules FILE]... [--policy FILE] [--json] [--strict]`: every error of every rule file
  and of the `detect:` section (file and key path), the Sigma rules or features left out and the warnings;
  with the cluster's audit Policy, which rules cannot fire (or miss some requests) because the requests they
  watch are not recorded at a level that has the fields they read.

Exit codes: 0 valid; 1 with `--strict`, when a rule cannot fire or a Sigma rule was left out; 2 invalid rules,
config or policy (every error printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from kube_audit_shipper.commands.detect import add_rule_source_arguments, load_engine
from kube_audit_shipper.errors import ConfigError, PolicyError
from kube_audit_shipper.process.detect.build import RuleCatalog
from kube_audit_shipper.process.detect.lint import LintFinding, lint_against_policy
from kube_audit_shipper.process.policy.load import load_policy

EXIT_OK = 0
EXIT_STRICT = 1
EXIT_INVALID = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rules_command", metavar="SUBCOMMAND", required=True)
    listing = sub.add_parser("list", help="list the detection rules", description="Every rule with its id, severity, state, tags and source.")
    add_rule_source_arguments(listing)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    lint = sub.add_parser(
        "lint",
        help="check rule files (and what an audit Policy lets them see)",
        description="Print every rule error with file and key path, Sigma rules left out, and with --policy the rules the policy starves.",
    )
    add_rule_source_arguments(lint)
    lint.add_argument("--policy", help="the cluster's audit Policy file: which rules cannot fire at the levels it records")
    lint.add_argument("--json", action="store_true", help="machine-readable output")
    lint.add_argument("--strict", action="store_true", help="exit 1 when a rule cannot fire or a Sigma rule was left out")


def run(args: argparse.Namespace, out: TextIO, err: TextIO = sys.stderr) -> int:
    if args.rules_command == "list":
        return run_list(args, out, err)
    return run_lint(args, out)


def run_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        _, catalog = load_engine(args)
    except ConfigError as exc:
        err.write(f"kube-audit-shipper rules list: {exc}\n")
        return EXIT_INVALID
    rows = [
        {
            "id": spec.id,
            "severity": spec.severity,
            "enabled": spec.enabled,
            "kind": "aggregate" if spec.aggregate is not None else spec.kind,
            "tags": spec.all_tags(),
            "source": spec.source,
            "title": spec.title,
        }
        for spec in catalog.specs
    ]
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return EXIT_OK
    table = [("ID", "SEVERITY", "ENABLED", "KIND", "TAGS", "SOURCE")] + [
        (
            spec.id,
            spec.severity,
            "yes" if spec.enabled else "no",
            "aggregate" if spec.aggregate is not None else spec.kind,
            ",".join(spec.all_tags()),
            spec.source,
        )
        for spec in catalog.specs
    ]
    widths = [max(len(row[column]) for row in table) for column in range(5)]
    for row in table:
        out.write("  ".join(f"{cell:<{widths[index]}}" for index, cell in enumerate(row[:5])) + f"  {row[5]}\n")
    out.write(f"{len(catalog.specs)} rule(s), {len(catalog.enabled)} enabled\n")
    return EXIT_OK


def run_lint(args: argparse.Namespace, out: TextIO) -> int:
    report: dict[str, Any] = {"valid": True, "errors": [], "skipped": [], "warnings": [], "policy": None, "findings": []}
    catalog: RuleCatalog | None = None
    try:
        _, catalog = load_engine(args)
    except ConfigError as exc:
        report["valid"] = False
        report["errors"] = list(exc.problems) if exc.source is None else [f"{exc.source}: {problem}" for problem in exc.problems]
    if catalog is not None:
        report["skipped"] = catalog.skipped
        report["warnings"] = catalog.warnings
        report["rules"] = len(catalog.specs)
    findings: list[LintFinding] = []
    if args.policy:
        report["policy"] = args.policy
        try:
            policy, _ = load_policy(args.policy)
        except PolicyError as exc:
            report["valid"] = False
            report["errors"] += [f"{args.policy}: {problem}" for problem in exc.problems]
        else:
            if catalog is not None:
                findings = lint_against_policy(catalog.specs, policy)
                report["findings"] = [finding._asdict() for finding in findings]
    if args.json:
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        out.write(_render(report, findings))
    if not report["valid"]:
        return EXIT_INVALID
    if args.strict and (report["skipped"] or any(finding.status == "cannot fire" for finding in findings)):
        return EXIT_STRICT
    return EXIT_OK


def _render(report: dict[str, Any], findings: list[LintFinding]) -> str:
    lines: list[str] = []
    if report["errors"]:
        lines.append(f"{len(report['errors'])} error(s):")
        lines += [f"  {problem}" for problem in report["errors"]]
    if report["skipped"]:
        lines.append(f"{len(report['skipped'])} Sigma rule(s) or feature(s) left out:")
        lines += [f"  {item}" for item in report["skipped"]]
    if report["warnings"]:
        lines.append(f"{len(report['warnings'])} warning(s):")
        lines += [f"  {item}" for item in report["warnings"]]
    if findings:
        starved = [finding for finding in findings if finding.status in ("cannot fire", "misses some")]
        lines.append(f"against the audit Policy {report['policy']}: {len(starved)} of {len(findings)} rule(s) starved")
        for finding in findings:
            if finding.status != "ok":
                lines.append(f"  {finding.rule}: {finding.status}: {finding.message}")
    if report["valid"]:
        lines.append(f"{report.get('rules', 0)} rule(s) valid")
    return "\n".join(lines) + "\n"

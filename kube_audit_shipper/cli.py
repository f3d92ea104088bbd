"""Command line: argv → command; the only place that turns errors into exit codes.

Exit codes: 0 success, 1 runtime failure, 2 invalid config/policy/usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import sys
from collections.abc import Sequence
from typing import Any

from kube_audit_shipper import __version__
from kube_audit_shipper.errors import AgentError, ConfigError, PolicyError, StateError

log = logging.getLogger("kube_audit_shipper")

EXAMPLES = """\
examples:
  kube-audit-shipper demo                               # built-in demo: fake apiserver → agent → shipped events, alerts, an HTML report
  kube-audit-shipper validate -c /etc/kube-audit-shipper/config.yaml
  kube-audit-shipper run -c /etc/kube-audit-shipper/config.yaml
  kube-audit-shipper run --once -c backfill.yaml        # ship what the files hold now, then exit
  kube-audit-shipper status -c /etc/kube-audit-shipper/config.yaml
  kube-audit-shipper policy check --policy /etc/kubernetes/audit-policy.yaml /var/log/kubernetes/audit/audit*.log*
  kube-audit-shipper detect --json /var/log/kubernetes/audit/audit*.log*   # the alerts the agent would raise
  kube-audit-shipper rules lint --policy /etc/kubernetes/audit-policy.yaml
  kube-audit-shipper report /var/log/kubernetes/audit/audit*.log* -o audit-report.html --since 24h
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kube-audit-shipper",
        description="Tail the kube-apiserver audit log, trim it with an audit Policy, and ship every event at least once.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"kube-audit-shipper {__version__}")
    p.add_argument("--log-format", choices=["text", "json"], default="text", help="log line format on stderr (default: text)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run the agent", description="Run the agent until SIGTERM/SIGINT (or, with --once, until everything in the files now is acknowledged)."
    )
    run.add_argument("-c", "--config", required=True, help="config YAML file")
    run.add_argument("--once", action="store_true", help="ship everything the files hold now, wait until every sink acknowledged it, exit 0")

    val = sub.add_parser("validate", help="check a config file", description="Check a config file; print every error and exit 2, or exit 0.")
    val.add_argument("-c", "--config", required=True)

    st = sub.add_parser("status", help="show per-file progress", description="Per file: path, identity, checkpoint offset, size, bytes behind.")
    st.add_argument("-c", "--config", required=True)
    st.add_argument("--json", action="store_true", help="machine-readable output")

    pol = sub.add_parser("policy", help="audit Policy tools", description="Audit Policy tools.")
    pol_sub = pol.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    check = pol_sub.add_parser(
        "check",
        help="what a Policy would keep of recorded audit logs",
        description="Apply an audit Policy to recorded audit logs (plain or .gz) and print, per rule, events matched, "
        "events and bytes before and after trimming, and the saving; flags rules that never matched or cannot be reached.",
    )
    check.add_argument("--policy", required=True, help="audit.k8s.io Policy YAML")
    check.add_argument("logs", nargs="*", metavar="LOG", help="audit log files (default: none, only validates the policy)")
    check.add_argument("--json", action="store_true", help="machine-readable output")

    dl = sub.add_parser(
        "deadletter", help="inspect and replay dead letters", description="Inspect the dead-letter store under state_dir and send its events again after a fix."
    )
    dl_sub = dl.add_subparsers(dest="deadletter_command", metavar="SUBCOMMAND", required=True)
    dl_list = dl_sub.add_parser("list", help="list dead letters not yet replayed")
    dl_list.add_argument("-c", "--config", required=True)
    dl_list.add_argument("--sink", help="only records of this sink")
    dl_list.add_argument("--all", action="store_true", help="include records already replayed")
    dl_list.add_argument("--json", action="store_true", help="one JSON record per line")
    dl_replay = dl_sub.add_parser("replay", help="send dead letters again (stop the agent first)")
    dl_replay.add_argument("-c", "--config", required=True)
    dl_replay.add_argument("--sink", help="only records of this sink")
    dl_replay.add_argument("--id", dest="ids", action="append", help="only this record id (repeatable)")

    from kube_audit_shipper.commands import detect, report, rules, sls_ensure

    sls_ensure.add_parser(sub)
    detect.add_arguments(
        sub.add_parser(
            "detect",
            help="run the detection rules over recorded audit logs",
            description="Evaluate the detection rules (built-in, --rules files, a config's detect: section) over recorded audit logs (plain or .gz), "
            "in file order: the alerts the agent raises on the same events.",
        )
    )
    rules.add_arguments(sub.add_parser("rules", help="list and lint detection rules", description="List the detection rules, or lint rule files and a Policy."))
    report.add_arguments(
        sub.add_parser(
            "report",
            help="one offline HTML report of recorded audit logs",
            description="Read recorded audit logs (plain, .gz, or the file sink's .ndjson.zst) and write one self-contained HTML page: "
            "overview, resource operations, who, cost and policy.",
        )
    )

    from kube_audit_shipper.commands import demo as demo_command

    demo_command.add_arguments(
        sub.add_parser(
            "demo",
            help="run the built-in demo",
            description="A fake kube-apiserver writes and rotates an audit log with four suspicious actions among normal traffic; "
            "the real agent trims it with an audit Policy, ships the events to zstd files and delivers the alerts the built-in rules raise; "
            "then an HTML report of the log is written.",
        )
    )
    return p


def _limit_malloc_arenas(arenas: int = 1) -> None:
    """glibc gives each thread that contends for the heap an arena of its own (up to 8 per core); event bytes allocated
    in one thread and freed in another fragment them, and RSS grows far past memory_limit_bytes. Before any thread."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).mallopt(-8, arenas)  # M_ARENA_MAX


def main(argv: Sequence[str] | None = None) -> int:
    _limit_malloc_arenas()
    args = _parser().parse_args(argv)
    from kube_audit_shipper.obs import logs

    scrubber = logs.Scrubber()
    logs.setup(args.log_level, args.log_format, scrubber=scrubber)
    args.scrubber = scrubber
    if args.command is None:
        _parser().print_help()
        return 2
    try:
        return _dispatch(args)
    except (ConfigError, PolicyError, StateError) as exc:  # the operator must fix something first: one line, exit 2
        print(f"kube-audit-shipper: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        log.error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


def _secrets(cfg: object) -> list[str]:
    """Values in the config that must never reach a log line (credentials, tokens, hash keys)."""
    import msgspec

    from kube_audit_shipper.obs.logs import Scrubber

    found: list[str] = []

    def walk(node: object, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and node and Scrubber.is_secret_key(key) and not key.endswith(("_file", "_env")):
            found.append(node)

    walk(msgspec.to_builtins(cfg))
    return found


def _load(args: argparse.Namespace) -> Any:
    """Load args.config and register its secrets with the log scrubber."""
    from kube_audit_shipper.config import load
    from kube_audit_shipper.sinks.alert_registry import secret_values

    cfg = load(args.config)
    args.scrubber.add_values(_secrets(cfg))
    for target in cfg.alerts:  # a Slack webhook URL is its own credential
        args.scrubber.add_values(secret_values(target))
    return cfg


def _dispatch(args: argparse.Namespace) -> int:

    if args.command == "validate":
        cfg = _load(args)
        from kube_audit_shipper.app.build import build_detection, load_transform

        engine = build_detection(cfg)  # every rule file: each error with its file and key path
        load_transform(cfg, engine)  # loads and validates the policy file too
        rules = f", {len(engine.by_id)} detection rule(s)" if engine is not None else ", detection off"
        targets = f", {len(cfg.alerts)} alert target(s)" if cfg.alerts else ""
        print(f"{args.config}: OK ({len(cfg.sinks)} sink(s): {', '.join(s.name for s in cfg.sinks)}{rules}{targets})")
        return 0
    if args.command == "run":
        cfg = _load(args)
        from kube_audit_shipper.app.service import Service
        from kube_audit_shipper.systemd import Notifier

        with Notifier.from_environ() as notifier:  # a no-op without NOTIFY_SOCKET
            return asyncio.run(Service(args.config, cfg, notifier=notifier, scrub=args.scrubber.text).run(once=args.once))
    if args.command == "status":
        from kube_audit_shipper.commands.status import print_status

        return print_status(_load(args), as_json=args.json, out=sys.stdout)
    if args.command == "policy":
        from kube_audit_shipper.commands.policy_check import run_policy_check

        return run_policy_check(args.policy, args.logs, as_json=args.json, out=sys.stdout)
    if args.command == "deadletter":
        from kube_audit_shipper.commands import deadletter

        cfg = _load(args)
        if args.deadletter_command == "list":
            return deadletter.list_deadletters(cfg, sink=args.sink, include_replayed=args.all, as_json=args.json, out=sys.stdout)
        return deadletter.replay_deadletters(cfg, sink=args.sink, ids=args.ids, out=sys.stdout)
    if args.command == "sls":
        from kube_audit_shipper.commands import sls_ensure

        return sls_ensure.run(args, sys.stdout)
    if args.command == "detect":
        from kube_audit_shipper.commands import detect

        return detect.run(args, sys.stdout)
    if args.command == "rules":
        from kube_audit_shipper.commands import rules as rules_command

        return rules_command.run(args, sys.stdout)
    if args.command == "report":
        from kube_audit_shipper.commands import report

        return report.run(args, sys.stdout)
    if args.command == "demo":
        from kube_audit_shipper.commands import demo as demo_command

        return demo_command.run(args, sys.stdout)
    raise AssertionError(args.command)

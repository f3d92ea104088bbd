"""`kube-audit-shipper policy check --policy FILE [LOG ...] [--json]`: try a policy on recorded audit logs.

Loads the policy exactly as the agent (and kube-apiserver) would, replays every event of the logs (plain or
gzip, recognised by its magic bytes) through evaluation and trimming, and prints per rule the events matched and
the events and bytes before and after trimming, the totals with the saving, the rules that never matched and the
rules no request can reach. No enrichment or redaction is applied: the figures are the policy's alone.

Exit codes: 0 done; 1 a log could not be read (the others are still reported); 2 the policy is invalid (every
error printed).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import BinaryIO, TextIO

from kube_audit_shipper.errors import MalformedEventError, PolicyError
from kube_audit_shipper.process.policy.load import load_policy
from kube_audit_shipper.process.policy.report import PolicyReport
from kube_audit_shipper.process.transform import Transform

EXIT_OK = 0
EXIT_LOG_ERROR = 1
EXIT_INVALID_POLICY = 2

_GZIP_MAGIC = b"\x1f\x8b"


def run_policy_check(policy_path: str, logs: list[str], *, as_json: bool, out: TextIO) -> int:
    """Run the check and write the report to `out`; return the exit code."""
    try:
        policy, warnings = load_policy(policy_path)
    except PolicyError as exc:
        if as_json:
            json.dump({"policy": policy_path, "valid": False, "errors": exc.problems}, out, indent=2)
            out.write("\n")
        else:
            out.write(f"policy {policy_path} is invalid: {len(exc.problems)} problem(s)\n")
            out.writelines(f"  {problem}\n" for problem in exc.problems)
        return EXIT_INVALID_POLICY
    transform = Transform(policy)
    report = PolicyReport(policy, policy_path, warnings)
    for path in logs:
        try:
            with open(path, "rb") as raw:
                for line in _lines(raw):
                    try:
                        label, output = transform.process(line)
                    except MalformedEventError:
                        report.malformed += 1
                        continue
                    assert label is not None
                    report.record(label, len(line), output)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            report.errors.append(f"{path}: {exc}")
            continue
        report.logs.append(path)
    report.record_stage_drops(transform.stage_drops)
    report.finish()
    if as_json:
        json.dump({"valid": True, **report.as_dict()}, out, indent=2)
        out.write("\n")
    else:
        out.write(report.render_text())
    return EXIT_LOG_ERROR if report.errors else EXIT_OK


def _lines(raw: BinaryIO) -> Iterator[bytes]:
    """The non-empty lines of a plain or gzip-compressed log, without line endings."""
    magic = raw.read(len(_GZIP_MAGIC))
    raw.seek(0)
    stream: BinaryIO | gzip.GzipFile = gzip.GzipFile(fileobj=raw, mode="rb") if magic == _GZIP_MAGIC else raw
    for line in stream:
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield line

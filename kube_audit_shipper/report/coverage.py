"""What an audit Policy would keep of the report's events, per rule: `policy check`'s figures, in the same pass.

The same pieces as `kube-audit-shipper policy check` (`commands/policy_check.py`): the policy loaded by
`process.policy.load_policy`, each event line replayed through `process.transform.Transform` (evaluation and
trimming, no enrichment) and counted by `process.policy.report.PolicyReport`; so the table on the page is
the one `policy check` prints for the same events. The report feeds it the lines inside its time window
only, while it reads them for everything else.
"""

from __future__ import annotations

from kube_audit_shipper.errors import MalformedEventError
from kube_audit_shipper.process.policy.load import load_policy
from kube_audit_shipper.process.policy.report import PolicyReport
from kube_audit_shipper.process.transform import Transform


class PolicyCoverage:
    """Raises `kube_audit_shipper.errors.PolicyError` (every problem listed) when the policy is invalid."""

    def __init__(self, policy_path: str) -> None:
        policy, warnings = load_policy(policy_path)
        self.transform = Transform(policy)
        self.report = PolicyReport(policy, policy_path, warnings)
        self.finished = False

    def feed(self, line: bytes) -> None:
        try:
            label, output = self.transform.process(line)
        except MalformedEventError:
            self.report.malformed += 1
            return
        except Exception:  # noqa: BLE001 - e.g. nesting past the decoder's limit: one line never stops the report
            self.report.malformed += 1
            return
        if label is not None:
            self.report.record(label, len(line), output)

    def finish(self, logs: list[str], errors: list[str]) -> PolicyReport:
        if not self.finished:
            self.report.logs.extend(logs)
            self.report.errors.extend(errors)
            self.report.record_stage_drops(self.transform.stage_drops)
            self.report.finish()
            self.finished = True
        return self.report

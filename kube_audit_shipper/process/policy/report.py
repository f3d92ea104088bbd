"""`policy check` statistics: what a policy would keep of a recorded log, rule by rule.

For each rule (and for "no-match"): events matched, events kept after trimming (dropped ones split into level
None and omitted stage), JSON bytes before and after trimming (without the line feed), and the saving. Rules that
never matched and rules that can never be reached (after a rule without any selector) are flagged.

`PolicyReport` only accumulates and renders; reading the logs and trimming is the command's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kube_audit_shipper.process.policy.match import NO_MATCH, CompiledPolicy
from kube_audit_shipper.process.policy.schema import LEVEL_NONE


@dataclass
class RuleStats:
    label: str
    level: str
    matched: int = 0
    events_after: int = 0
    dropped_stage: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    never_matched: bool = False
    unreachable: bool = False

    @property
    def dropped_level(self) -> int:
        return self.matched - self.events_after - self.dropped_stage

    @property
    def saving_percent(self) -> float | None:
        if not self.bytes_before:
            return None
        return round(100.0 * (self.bytes_before - self.bytes_after) / self.bytes_before, 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.label,
            "level": self.level,
            "matched": self.matched,
            "events_before": self.matched,
            "events_after": self.events_after,
            "dropped_level_none": self.dropped_level,
            "dropped_omitted_stage": self.dropped_stage,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "saving_percent": self.saving_percent,
            "never_matched": self.never_matched,
            "unreachable": self.unreachable,
        }


class PolicyReport:
    """Per-rule counters for one policy over some logs."""

    def __init__(self, policy: CompiledPolicy, policy_path: str, warnings: list[str]) -> None:
        self.policy_path = policy_path
        self.warnings = list(warnings)
        self.logs: list[str] = []
        self.errors: list[str] = []
        self.malformed = 0
        self.catch_all = policy.catch_all_index()
        unreachable = set(policy.unreachable_rules())
        self.rules = [
            RuleStats(decision.label, rule.level, unreachable=decision.rule_index in unreachable)
            for decision, rule in zip(policy.decisions, policy.policy.rules, strict=True)
        ]
        self.no_match = RuleStats(NO_MATCH, LEVEL_NONE)
        self._by_label = {stats.label: stats for stats in self.rules}
        self._by_label[NO_MATCH] = self.no_match

    def record(self, label: str, bytes_before: int, output: bytes | None) -> None:
        """One event decided by rule `label`; `output` None when the policy dropped it."""
        stats = self._by_label[label]
        stats.matched += 1
        stats.bytes_before += bytes_before
        if output is not None:
            stats.events_after += 1
            stats.bytes_after += len(output)

    def record_stage_drops(self, stage_drops: dict[str, int]) -> None:
        """How many of each rule's dropped events were dropped for an omitted stage (not for level None)."""
        for label, count in stage_drops.items():
            self._by_label[label].dropped_stage = count

    def finish(self) -> None:
        for stats in self.rules:
            stats.never_matched = stats.matched == 0

    def total(self) -> RuleStats:
        total = RuleStats("total", "")
        for stats in [*self.rules, self.no_match]:
            total.matched += stats.matched
            total.events_after += stats.events_after
            total.dropped_stage += stats.dropped_stage
            total.bytes_before += stats.bytes_before
            total.bytes_after += stats.bytes_after
        return total

    def as_dict(self) -> dict[str, Any]:
        total = self.total().as_dict()
        for key in ("rule", "level", "never_matched", "unreachable"):
            del total[key]
        return {
            "policy": self.policy_path,
            "warnings": self.warnings,
            "logs": self.logs,
            "errors": self.errors,
            "malformed_lines": self.malformed,
            "catch_all_rule": None if self.catch_all is None else self.rules[self.catch_all].label,
            "rules": [stats.as_dict() for stats in self.rules],
            "no_match": self.no_match.as_dict(),
            "total": total,
        }

    def render_text(self) -> str:
        lines = [f"policy {self.policy_path}: {len(self.rules)} rules"]
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        total = self.total()
        lines.append(f"read {len(self.logs)} log(s): {total.matched} events, {self.malformed} malformed line(s) skipped")
        lines.extend(f"error: {error}" for error in self.errors)
        header = f"{'rule':<10} {'level':<16} {'matched':>9} {'kept':>9} {'dropped':>9} {'bytes before':>14} {'bytes after':>14} {'saved':>7}  notes"
        lines += ["", header, "-" * len(header)]
        for stats in [*self.rules, self.no_match, total]:
            lines.append(self._row(stats))
        lines.append("")
        never = [stats.label for stats in self.rules if stats.never_matched and not stats.unreachable]
        unreachable = [stats.label for stats in self.rules if stats.unreachable]
        lines.append("never matched: " + (", ".join(never) if never else "none"))
        if unreachable:
            assert self.catch_all is not None
            lines.append(f"unreachable (after the catch-all {self.rules[self.catch_all].label}): " + ", ".join(unreachable))
        else:
            lines.append("unreachable: none")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _row(stats: RuleStats) -> str:
        saving = stats.saving_percent
        notes = []
        if stats.unreachable:
            notes.append("unreachable")
        elif stats.never_matched:
            notes.append("never matched")
        if stats.dropped_stage:
            notes.append(f"{stats.dropped_stage} for an omitted stage")
        return (
            f"{stats.label:<10} {stats.level:<16} {stats.matched:>9} {stats.events_after:>9} "
            f"{stats.matched - stats.events_after:>9} {stats.bytes_before:>14} {stats.bytes_after:>14} "
            f"{'-' if saving is None else f'{saving:.1f}%':>7}  {', '.join(notes)}".rstrip()
        )

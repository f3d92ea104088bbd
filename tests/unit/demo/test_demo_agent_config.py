"""The config and Policy the demo writes: valid for the real loaders, detection on, alerts to a file target, a
Policy that trims and never drops."""

from __future__ import annotations

from pathlib import Path

from kube_audit_shipper.config import load
from kube_audit_shipper.demo.agent_config import DemoFiles
from kube_audit_shipper.demo.scenario import Scenario
from kube_audit_shipper.process.policy.load import load_policy
from kube_audit_shipper.process.transform import Transform


def test_the_config_is_valid_and_sends_events_and_alerts_to_files(tmp_path: Path) -> None:
    root = tmp_path / 'a dir with "quotes", spaces: and # signs'
    files = DemoFiles(root)
    files.write()
    cfg = load(files.config)
    assert cfg.input.paths == [str(files.log)] and cfg.state_dir == str(files.state) and cfg.policy.file == str(files.policy)
    assert [(s.name, type(s).__name__, s.path) for s in cfg.sinks] == [("archive", "FileSinkConfig", str(files.events))]
    assert [(t.name, type(t).__name__, t.path, t.format) for t in cfg.alerts] == [("alerts", "FileAlertTargetConfig", str(files.alerts), "alert")]
    assert cfg.detect.enabled and cfg.detect.builtin_rules and cfg.metrics.listen is None
    assert files.log.parent.is_dir() and not files.log.exists()
    assert {files.report.parent, files.events.parent, files.alerts.parent, files.state.parent} == {root}


def test_the_policy_trims_every_kind_of_event_and_drops_none(tmp_path: Path) -> None:
    files = DemoFiles(tmp_path)
    files.write()
    policy, warnings = load_policy(str(files.policy))
    assert warnings == [] and all(rule.level != "None" for rule in policy.policy.rules)
    transform = Transform(policy)
    before = after = 0
    for line in Scenario(1, 3000).lines():
        _, output = transform.process(line)
        assert output is not None
        before, after = before + len(line), after + len(output)
    assert after < 0.8 * before and sum(transform.drops.values()) == 0
    assert {label for label, n in transform.matched.items() if not n} == {"rule[6]", "no-match"}, transform.matched  # all but the catch-all

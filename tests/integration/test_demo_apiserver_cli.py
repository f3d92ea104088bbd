"""The fake-apiserver CLI (`python -m kube_audit_shipper.demo.apiserver`) as a process: it writes every event,
rotates, compresses and prints one summary; SIGTERM finishes the line being written."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from kube_audit_shipper.demo.apiserver import list_backups
from kube_audit_shipper.demo.events import AuditEventGenerator
from tests.support.corpus import REPO
from tests.support.rotated_logs import all_ids
from tests.support.wait import until_blocking


def _cli(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, "-m", "kube_audit_shipper.demo.apiserver", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_cli_writes_all_events_rotates_and_prints_one_summary(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    proc = _cli(tmp_path, "--path", str(log), "--events", "600", "--rate", "5000", "--max-bytes", "200000", "--compress", "--seed", "9")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == ""
    summary = json.loads(out)
    assert out.count("\n") == 1 and summary == {"events": 600, "rotations": len(list_backups(log)), "dropped": 0}
    assert summary["rotations"] >= 2 and all(b.name.endswith(".gz") for b in list_backups(log))
    expected = [json.loads(line)["auditID"] for line in AuditEventGenerator(9).lines(600)]
    assert all_ids(log) == expected


def test_cli_finishes_the_current_line_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    proc = _cli(tmp_path, "--path", str(log), "--events", "0", "--rate", "2000", "--max-bytes", "100000")

    def well_under_way() -> bool:
        try:
            return log.stat().st_size >= 50_000 or bool(list_backups(log))
        except FileNotFoundError:  # not created yet, or renamed by a rotation this instant
            return bool(list_backups(log))

    until_blocking(well_under_way, what="50 kB written or a rotation")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err == ""
    summary = json.loads(out)
    ids = all_ids(log)  # read_lines asserts every file ends on a newline
    assert summary["events"] == len(ids) > 0
    assert ids == [json.loads(line)["auditID"] for line in AuditEventGenerator(0).lines(len(ids))]
    assert re.fullmatch(r'\{"events": \d+, "rotations": \d+, "dropped": 0\}\n', out)

"""An input the agent cannot read is visible: to scripts (`run --once` exits 3), to monitoring
(`kube_audit_shipper_source_read_errors_total{reason}`, `/readyz`) and in the log, and once it can be
read its events are shipped without a restart.

Permission is denied for real: the audit log is mode 000 and the agent runs without the capabilities
that would let root read it anyway (setpriv drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH), as a
non-root agent would be refused a kube-apiserver audit log of mode 0600.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tests.support.corpus import REPO, audit_id, numbered_lines
from tests.support.harness import append, sink_lines
from tests.support.wait import until_blocking

DROP_READ_OVERRIDE = ["--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-dac_override,-dac_read_search"]


def agent_argv(*args: str) -> list[str]:
    argv = [sys.executable, "-m", "kube_audit_shipper", *args]
    if os.geteuid() == 0:  # root reads a mode-000 file unless it loses these capabilities
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "setpriv (util-linux) is needed to run the agent without CAP_DAC_OVERRIDE"
        argv = [setpriv, *DROP_READ_OVERRIDE, *argv]
    return argv


def write_config(tmp_path: Path, **top: object) -> Path:
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "input": {"paths": [str(tmp_path / "log" / "audit.log")], "poll_interval_ms": 50, "rescan_interval_ms": 200},
        "batch": {"max_wait_ms": 50},
        "sinks": [{"name": "archive", "type": "file", "path": str(tmp_path / "out")}],
        "checkpoint": {"flush_interval_ms": 50},
        "metrics": {"listen": None},
        **top,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_once_exits_3_naming_the_input_it_cannot_read(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    append(log, numbered_lines(20))
    log.chmod(0)
    proc = subprocess.run(agent_argv("run", "--once", "-c", str(write_config(tmp_path))), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "cannot read an input" in line]
    assert len(errors) == 1 and str(log) in errors[0] and "permission_denied" in errors[0]
    assert sink_lines(tmp_path / "out") == []


def test_a_directory_that_cannot_be_listed_is_reported_too(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    append(log, numbered_lines(5))
    (tmp_path / "log").chmod(0)
    try:
        proc = subprocess.run(agent_argv("run", "--once", "-c", str(write_config(tmp_path))), cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        (tmp_path / "log").chmod(0o755)
    assert proc.returncode == 3, proc.stderr
    assert any("cannot read an input" in line and str(tmp_path / "log") in line for line in proc.stderr.splitlines())


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreadable_input_fails_readiness_and_counts_then_ships_once_readable(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    lines = numbered_lines(30)
    append(log, lines)
    log.chmod(0)
    port = _free_port()
    cfg = write_config(tmp_path, metrics={"listen": f"127.0.0.1:{port}"})
    proc = subprocess.Popen(agent_argv("run", "-c", str(cfg)), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        until_blocking(lambda: _get(f"http://127.0.0.1:{port}/healthz")[0] == 200, what="the agent serving")
        until_blocking(
            lambda: 'kube_audit_shipper_source_read_errors_total{reason="permission_denied"} 1.0' in _get(f"http://127.0.0.1:{port}/metrics")[1],
            what="a permission_denied read error counted",
        )
        assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 503
        log.chmod(0o644)  # fixed: the next scan reads it, no restart
        until_blocking(lambda: len(sink_lines(tmp_path / "out", include_tmp=True)) == len(lines), what="every event shipped once readable")
        until_blocking(lambda: _get(f"http://127.0.0.1:{port}/readyz")[0] == 200, what="ready once readable")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "input readable again" in err
    assert sorted(audit_id(x) for x in sink_lines(tmp_path / "out")) == sorted(audit_id(x) for x in lines)

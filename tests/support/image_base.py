"""A stand-in for the official `python:X.Y-slim-<suite>` image, made from Debian packages.

Where the tests run there is no registry to pull packaging/Dockerfile's base from, so it is made here:
mmdebstrap installs Debian's pythonX.Y (with venv, whose ensurepip brings pip and setuptools), apt and
CA certificates into a tarball, which is imported into buildah's store under the very name the
Dockerfile's `FROM` uses; the Dockerfile then builds unchanged. Like the official image it has
`python` and `python3` on PATH (in /usr/local/bin), apt with the suite's sources (main, updates,
security) and empty package lists, LANG=C.UTF-8 and CMD ["python3"]. Unlike it, the interpreter is
Debian's /usr/bin/pythonX.Y, whose bundled pip verifies TLS against the system CA bundle rather than
certifi's, and documentation, man pages and translations are left out (dpkg path-exclude) to keep
the vfs copies small.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.image_buildah import Buildah

_OFFICIAL = re.compile(r"(?:docker\.io/)?(?:library/)?python:(?P<version>3\.\d+)-slim-(?P<suite>[a-z]+)")
ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the official image's PATH


class BaseImageError(RuntimeError):
    """mmdebstrap failed or ran out of time; the message holds the end of what it said."""


@dataclass(frozen=True)
class BaseSpec:
    """What the image name asks for: a Python version and the Debian suite it is built on."""

    name: str
    python: str
    suite: str

    @classmethod
    def parse(cls, name: str) -> BaseSpec:
        m = _OFFICIAL.fullmatch(name)
        if m is None:
            raise ValueError(f"{name!r}: only an official python:X.Y-slim-<suite> tag (no digest) can be stood in for from Debian packages")
        return cls(name=name, python=m["version"], suite=m["suite"])

    @property
    def packages(self) -> list[str]:
        return [f"python{self.python}", f"python{self.python}-venv", "ca-certificates", "netbase"]


def debootstrap_tar(spec: BaseSpec, out: Path, *, timeout_s: float) -> None:
    """The root file system as a tarball, from the suite on deb.debian.org (updates and security added by mmdebstrap)."""
    python = f"/usr/bin/python{spec.python}"
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--variant=apt",
        "--format=tar",
        "--include=" + ",".join(spec.packages),
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        f'--customize-hook=ln -s {python} "$1/usr/local/bin/python" && ln -s {python} "$1/usr/local/bin/python3"',
        # the host's name and resolver are not part of an image: the runtime provides them
        '--customize-hook=rm -f "$1/etc/hostname" "$1/etc/resolv.conf"',
        spec.suite,
        str(out),
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise BaseImageError(f"mmdebstrap: no answer within {timeout_s:.0f} s (is deb.debian.org reachable?)") from exc
    if done.returncode != 0:
        raise BaseImageError(f"{' '.join(argv)}: exit status {done.returncode}\n{done.stderr[-6000:]}")


def make_base(buildah: Buildah, spec: BaseSpec, workdir: Path, *, timeout_s: float = 600) -> str:
    """Build the stand-in and tag it `spec.name` in buildah's store; returns the image id."""
    tar = workdir / "base.tar"
    debootstrap_tar(spec, tar, timeout_s=timeout_s)
    try:
        ctr = buildah.run("from", "--pull=never", "--name", "image-base", "scratch", timeout_s=60).stdout.strip()
        buildah.run("add", ctr, str(tar), "/", timeout_s=timeout_s)  # a local tarball is extracted, ownership kept
        buildah.run("config", "--env", f"PATH={ENV_PATH}", "--env", "LANG=C.UTF-8", "--cmd", '["python3"]', ctr, timeout_s=60)
        return buildah.run("commit", "--rm", "--quiet", ctr, spec.name, timeout_s=timeout_s).stdout.strip()
    finally:
        tar.unlink(missing_ok=True)

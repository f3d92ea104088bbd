"""buildah on a storage root of its own: builds and runs OCI images without a container engine, a daemon
or a registry, and leaves nothing behind.

The vfs storage driver works on any file system (no overlay mounts, so also inside a container or a VM
whose root is itself an overlay), and chroot isolation needs no OCI runtime (runc/crun): `RUN` steps
and `run` use buildah's own chroot with private mount, PID, IPC and UTS namespaces and the host's
network. Both need root. The machine's /etc/containers/storage.conf is replaced by one naming only
this root, so whatever the machine keeps in its own image store is neither read nor touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class BuildahError(RuntimeError):
    """A buildah command failed or ran out of time; the message holds its argv and the end of its output."""


def _tail(text: str, chars: int = 6000) -> str:
    return text if len(text) <= chars else "…" + text[-chars:]


@dataclass(frozen=True)
class Buildah:
    """buildah with its image store, run state and config under `root`, which `remove` deletes."""

    root: Path

    @classmethod
    def create(cls, root: Path) -> Buildah:
        root.mkdir(parents=True, exist_ok=True)
        (root / "storage.conf").write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{root / "storage"}"\nrunroot = "{root / "run"}"\n')
        return cls(root)

    def argv(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.root / "storage"), "--runroot", str(self.root / "run"), "--storage-driver", "vfs", *args]

    def env(self) -> dict[str, str]:
        """The caller's environment (buildah hands http_proxy and friends on to RUN steps) with this store's config."""
        return {
            **os.environ,
            "TMPDIR": str(self.root),  # buildah's own temporary files, removed with the root
            "CONTAINERS_STORAGE_CONF": str(self.root / "storage.conf"),
            "BUILDAH_ISOLATION": "chroot",
            "LANG": "C.UTF-8",
        }

    def run(self, *args: str, timeout_s: float, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = self.argv(*args)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=self.env(), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise BuildahError(f"{' '.join(argv)}: no answer within {timeout_s:.0f} s\n{_tail(out)}\n{_tail(err)}") from exc
        if check and done.returncode != 0:
            raise BuildahError(f"{' '.join(argv)}: exit status {done.returncode}\n--- stdout\n{_tail(done.stdout)}\n--- stderr\n{_tail(done.stderr)}")
        return done

    def inspect_image(self, image: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run("inspect", "--type", "image", image, timeout_s=60).stdout)
        return data

    def container(self, image: str, name: str) -> str:
        """A working container of `image` (never pulled: the image must be in this store)."""
        return self.run("from", "--pull=never", "--name", name, image, timeout_s=180).stdout.strip().splitlines()[-1]

    @contextmanager
    def working_container(self, image: str, name: str) -> Iterator[str]:
        """`container`, removed afterwards: with vfs every container is a full copy of the image's files."""
        ctr = self.container(image, name)
        try:
            yield ctr
        finally:
            self.run("rm", ctr, timeout_s=300, check=False)

    def mount(self, container: str) -> Path:
        """The container's root file system on the host (vfs: a plain directory, no mount involved)."""
        return Path(self.run("mount", container, timeout_s=60).stdout.strip())

    def run_in(self, container: str, argv: Sequence[str], *, timeout_s: float) -> subprocess.CompletedProcess[str]:
        """`argv` in the container as its configured user, in its working directory, with its environment,
        /proc, /sys and /dev mounted: what `docker run --entrypoint` does, minus the network namespace."""
        return self.run("run", "--isolation", "chroot", "--terminal=false", container, "--", *argv, timeout_s=timeout_s, check=False)

    def remove(self) -> None:
        """Every container and image of this store, then the root itself. Refuses to delete through a mount point."""
        try:
            self.run("rm", "--all", timeout_s=300, check=False)
            self.run("rmi", "--all", "--force", timeout_s=300, check=False)
        finally:
            mounted = _mount_points_under(self.root)
            if mounted:
                raise BuildahError(f"not removing {self.root}: still mounted there: {', '.join(mounted)}")
            shutil.rmtree(self.root)


def _mount_points_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix) or point == prefix[:-1]:
            points.append(point)
    return points

"""`input:` section: which files to tail and how."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

MiB = 1 << 20


class InputConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    paths: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1)]],
        msgspec.Meta(min_length=1, description="audit log paths (globs allowed); rotated siblings <name>-<timestamp><ext>[.gz] are found next to each"),
    ] = msgspec.field(default_factory=lambda: ["/var/log/kubernetes/audit/audit.log"])
    exclude: Annotated[list[str], msgspec.Meta(description="globs of files never to read")] = msgspec.field(default_factory=list)
    start_at: Annotated[
        Literal["beginning", "end"],
        msgspec.Meta(description="where to start in a file present at the very first start (no state yet); files found later always start at 0"),
    ] = "beginning"
    backfill_rotated: Annotated[
        bool,
        msgspec.Meta(description="very first start only: also ship rotated backups already on disk; after that every new file is shipped"),
    ] = False
    max_line_bytes: Annotated[
        int, msgspec.Meta(ge=1024, le=1 << 30, description="a longer line is skipped to its newline and dead-lettered (its location, not its bytes)")
    ] = 16 * MiB
    read_chunk_bytes: Annotated[int, msgspec.Meta(ge=4096, le=64 * MiB, description="bytes read per system call")] = 1 * MiB
    poll_interval_ms: Annotated[
        int,
        msgspec.Meta(
            ge=10,
            le=60_000,
            description="the least time between two looks (fstat, read) at open files: with inotify (Linux) an idle file is not looked "
            "at and a file being written is looked at this often; without it, the polling interval",
        ),
    ] = 200
    rescan_interval_ms: Annotated[
        int,
        msgspec.Meta(ge=100, le=600_000, description="how often globs are re-evaluated and, with inotify, open files are looked at anyway (a safety net)"),
    ] = 5000
    max_open_files: Annotated[
        int,
        msgspec.Meta(
            ge=2,
            le=65536,
            description="input files held open at once; a file is opened as soon as it is found (an open file can still be read after "
            "kube-apiserver deletes it), oldest first, up to this many",
        ),
    ] = 128

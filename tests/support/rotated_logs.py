"""Read back an audit log as a rotating writer left it: the backups (oldest first), then the active file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from kube_audit_shipper.demo.apiserver import list_backups


def read_lines(path: Path) -> list[bytes]:
    """The lines of one file (gzip-compressed backups too); a file must end on a newline, never inside a line."""
    data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path.name} ends inside a line"
    return data.splitlines()


def all_ids(active: Path) -> list[str]:
    """auditIDs across backups (oldest first) and then the active file."""
    files = [*list_backups(active), *([active] if active.exists() else [])]
    return [json.loads(line)["auditID"] for f in files for line in read_lines(f)]

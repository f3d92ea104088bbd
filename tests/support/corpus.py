"""Real audit events from tests/data/real-audit (see its SOURCES.md), and numbered copies of them for loss/dup checks."""

from __future__ import annotations

import itertools
from functools import lru_cache
from pathlib import Path

import msgspec

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"  # copied into the repository with their sources and licences
REAL_AUDIT = DATA / "real-audit"
POLICIES = DATA / "policies"


@lru_cache(maxsize=1)
def corpus_lines() -> tuple[bytes, ...]:
    """Every real event line, as found (no trailing newline)."""
    lines: list[bytes] = []
    for path in sorted(REAL_AUDIT.glob("*.jsonl")):
        lines.extend(line for line in path.read_bytes().splitlines() if line.strip())
    assert lines, f"no corpus found under {REAL_AUDIT}"
    return tuple(lines)


def numbered_lines(n: int, *, start: int = 0, prefix: str = "t") -> list[bytes]:
    """n real events, cycled through the corpus, each with a unique auditID `<prefix>-<number>`."""
    out = []
    for i, line in zip(range(start, start + n), itertools.cycle(corpus_lines())):
        event = msgspec.json.decode(line)
        event["auditID"] = f"{prefix}-{i:09d}"
        out.append(msgspec.json.encode(event))
    return out


def audit_id(line: bytes) -> str:
    return msgspec.json.decode(line)["auditID"]

"""What every test folder shares: tiers by folder, and the fixtures more than one folder uses.

Tiers are given by where a test lives, never by hand: everything outside tests/unit is `integration`
(real processes, sockets, servers on 127.0.0.1, timing of a running agent); tests/torture is `torture`
too, tests/ops `ops` too. So `pytest -m "not integration"` runs exactly tests/unit. Server fixtures live
in tests/integration/conftest.py, the servers themselves in tests/support/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_audit_shipper.deadletter.store import DeadLetterStore

TESTS = Path(__file__).resolve().parent
MiB = 1 << 20
FOLDER_MARKERS = {"torture": ("integration", "torture"), "ops": ("integration", "ops")}  # any other folder but unit: integration


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:  # a test file outside tests/ (given on the command line): not ours to tier
            continue
        if folder == "unit":
            continue
        for name in FOLDER_MARKERS.get(folder, ("integration",)):
            item.add_marker(getattr(pytest.mark, name))


@pytest.fixture
def dl(tmp_path: Path) -> Iterator[DeadLetterStore]:
    """A dead-letter store in the test's state directory, large enough for every test (multi-MiB events kept whole)."""
    store = DeadLetterStore(tmp_path / "state", max_bytes=64 * MiB, max_event_bytes=16 * MiB)
    yield store
    store.close()

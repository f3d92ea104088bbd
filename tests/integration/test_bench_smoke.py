"""The benchmark command keeps working: ``python -m tests.bench --quick`` runs every scenario at tiny sizes and
writes its JSON with every scenario key. Nothing about timings is asserted (they belong in tests/bench/RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_quick_writes_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--quick", "--rates", "1000,5000", "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    data = json.loads(out.read_text())
    expected = [
        "backlog_no_policy",
        "backlog_policy",
        "reference_cat",
        "reference_zstd",
        "reference_naive_msgspec",
        "reference_naive_msgspec_zstd",
        "steady_1000",
        "steady_5000",
        "stages",
    ]
    assert data["meta"]["scenario_keys"] == expected
    assert sorted(data["scenarios"]) == sorted(expected)
    for key in ("backlog_no_policy", "backlog_policy"):
        assert data["scenarios"][key]["events_shipped"] > 0
    for key in ("steady_1000", "steady_5000"):
        assert data["scenarios"][key]["events_written"] > 0
    assert [row["step"] for row in data["scenarios"]["stages"]["policy"]["steps"]] == [
        "read+split",
        "decode",
        "policy+trim",
        "redact",
        "enrich",
        "encode",
        "compress",
    ]
    assert data["meta"]["git"]["commit"] and data["meta"]["machine"]["nproc"]
    assert data["targets"] and {"ratios", "input"} <= data.keys()
    assert "Targets" in r.stdout

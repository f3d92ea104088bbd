"""The benchmark command keeps working: ``python -m tests.bench --quick`` runs every scenario on every input mix at
tiny sizes and writes its JSON with every scenario key. Nothing about timings is asserted (they belong in
tests/bench/RESULTS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MIXES = ("default", "diverse", "metadata", "real")
CONFIGS = ("no_policy", "policy", "policy_detect")
REFERENCES = ("reference_cat", "reference_zstd", "reference_naive_msgspec", "reference_naive_msgspec_zstd")


def test_bench_quick_writes_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "FLUENT_BIT"}  # the Fluent Bit comparison only runs when asked
    r = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--quick", "--rates", "1000,5000", "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    data = json.loads(out.read_text())
    expected = [f"{mix}/{key}" for mix in MIXES for key in (*(f"backlog_{kind}" for kind in CONFIGS), *REFERENCES, "stages")]
    expected += ["steady_1000", "steady_5000"]
    assert data["meta"]["scenario_keys"] == expected
    assert sorted(data["scenarios"]) == sorted(expected)
    for mix in MIXES:
        for kind in CONFIGS:
            backlog = data["scenarios"][f"{mix}/backlog_{kind}"]
            assert backlog["events_shipped"] > 0 and backlog["cpu_us_per_event"] > 0
        assert [row["step"] for row in data["scenarios"][f"{mix}/stages"]["policy"]["steps"]] == [
            "read+split",
            "decode",
            "detect",
            "policy+trim",
            "redact",
            "enrich",
            "encode",
            "compress",
        ]
        assert data["inputs"][mix]["events"] > 0
    for key in ("steady_1000", "steady_5000"):
        assert data["scenarios"][key]["events_written"] > 0
    assert data["meta"]["git"]["commit"] and data["meta"]["machine"]["nproc"]
    assert data["targets"] and {"ratios", "inputs"} <= data.keys()
    assert "Targets" in r.stdout

"""The targets of issue 4 evaluated on one run's results, and the printed tables."""

from __future__ import annotations

from typing import Any

RSS_LIMIT_MB = 80.0
POLICY_CPU_OVERHEAD_LIMIT = 0.25
STEADY_CPU_LIMITS = {1000: 2.0, 10000: 15.0}  # % of one core at this rate
LATENCY_SLACK_MS = 250.0  # p99 at 1k events/s <= batch.max_wait_ms + this
LATENCY_RATE = 1000


def ratios(scenarios: dict[str, Any]) -> dict[str, float]:
    """Agent MB/s over each reference's MB/s (same files, same run), and the policy's CPU cost over no policy."""
    out: dict[str, float] = {}
    for kind in ("policy", "no_policy"):
        agent = scenarios.get(f"backlog_{kind}")
        if agent is None:
            continue
        for ref in ("cat", "zstd", "naive_msgspec", "naive_msgspec_zstd"):
            r = scenarios.get(f"reference_{ref}")
            if r is not None:
                out[f"{kind}_vs_{ref}"] = round(agent["mb_per_s"] / r["mb_per_s"], 3)
    p, n = scenarios.get("backlog_policy"), scenarios.get("backlog_no_policy")
    if p is not None and n is not None:
        out["policy_cpu_overhead"] = round(p["cpu_s"] / n["cpu_s"] - 1, 3)
    return out


LOADED_CORES = 0.25  # other processes used more than this during a measurement: its figure is marked


def _target(name: str, value: float | None, op: str, limit: float, unit: str = "", *sources: dict[str, Any]) -> dict[str, Any]:
    ok = value is not None and (value >= limit if op == ">=" else value <= limit)
    load = max((s.get("other_load_cores") or 0.0 for s in sources), default=0.0)
    return {"name": name, "value": value, "op": op, "limit": limit, "unit": unit, "ok": ok, "other_load_cores": load, "under_load": load > LOADED_CORES}


def targets(scenarios: dict[str, Any], rat: dict[str, float]) -> list[dict[str, Any]]:
    out = []
    naive = scenarios.get("reference_naive_msgspec", {})
    for kind in ("policy", "no_policy"):
        if f"{kind}_vs_naive_msgspec" in rat:
            out.append(
                _target(
                    f"backlog {kind}: agent MB/s / naive msgspec loop MB/s",
                    rat[f"{kind}_vs_naive_msgspec"],
                    ">=",
                    1.0,
                    "x",
                    scenarios[f"backlog_{kind}"],
                    naive,
                )
            )
    if "policy_cpu_overhead" in rat:
        out.append(
            _target(
                "backlog: policy + enrichment CPU over no policy",
                round(100 * rat["policy_cpu_overhead"], 1),
                "<=",
                100 * POLICY_CPU_OVERHEAD_LIMIT,
                "%",
                scenarios["backlog_policy"],
                scenarios["backlog_no_policy"],
            )
        )
    for key, s in scenarios.items():
        if key.startswith("steady_") and s["rate"] in STEADY_CPU_LIMITS:
            out.append(_target(f"steady {s['rate']}/s: agent CPU, % of one core", s["agent_cpu_pct"], "<=", STEADY_CPU_LIMITS[s["rate"]], "%", s))
    for key, s in scenarios.items():
        if key.startswith("steady_") and s["rate"] == LATENCY_RATE:
            out.append(_target(f"steady {s['rate']}/s: latency p99", s["latency_ms"]["p99"], "<=", s["batch_max_wait_ms"] + LATENCY_SLACK_MS, "ms", s))
    for key, s in scenarios.items():
        if key.startswith("backlog_"):
            out.append(_target(f"{key}: peak RSS", round(s["max_rss_mb"], 1), "<=", RSS_LIMIT_MB, "MB", s))
        elif key.startswith("steady_"):
            out.append(_target(f"{key}: peak RSS", s["agent_max_rss_mb"], "<=", RSS_LIMIT_MB, "MB", s))
    for key, s in scenarios.items():
        if key.startswith("steady_"):
            out.append(_target(f"{key}: every event arrived (missing + unexpected)", s["events_missing"] + s["events_unexpected"], "<=", 0, "events", s))
    return out


def _cell(c: Any) -> str:
    if c is None:
        return ""
    if isinstance(c, float):
        return f"{c:,.2f}"
    if isinstance(c, int) and not isinstance(c, bool):
        return f"{c:,}"
    return str(c)


def _table(headers: list[str], rows: list[list[Any]], md: bool = False) -> str:
    cells = [list(headers)] + [[_cell(c) for c in row] for row in rows]
    if md:
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(headers))) + " |")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(result: dict[str, Any], md: bool = False) -> str:
    """The tables, as text for the terminal or (`md`) as Markdown for RESULTS.md."""
    meta, sc = result["meta"], result["scenarios"]

    def title(text: str) -> str:
        return f"**{text}**\n" if md else text

    m = meta["machine"]
    out = [
        f"kube-audit-shipper benchmark: commit {meta['git']['commit']}{' (uncommitted changes)' if meta['git']['dirty'] else ''}, "
        f"{m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, seed {meta['args']['seed']}, {meta['duration_s']:.0f} s",
    ]
    inp = result.get("input")
    if inp:
        out.append(
            f"input: {inp['bytes'] / 1e6:,.1f} MB, {inp['events']:,} events (mean {inp['mean_event_bytes']:.0f} B), "
            f"{inp['files']} files, blake2b {inp['blake2b']}"
        )
    rows = []
    for key, label in (
        ("backlog_no_policy", "agent, no policy"),
        ("backlog_policy", "agent, policy + enrichment"),
        ("reference_cat", "cat > /dev/null"),
        ("reference_zstd", "zstd -3 -T1"),
        ("reference_naive_msgspec", "naive msgspec loop"),
        ("reference_naive_msgspec_zstd", "naive msgspec loop + zstd -3"),
    ):
        s = sc.get(key)
        if s is None:
            continue
        rows.append(
            [
                label,
                s["wall_s"],
                s["cpu_s"],
                s["user_s"],
                s["sys_s"],
                round(s["max_rss_mb"], 1),
                round(s["events_per_s"]),
                s["mb_per_s"],
                s["mb_per_cpu_s"],
                s.get("events_shipped", ""),
                round(s["bytes_out"] / 1e6, 1) if s.get("bytes_out") is not None else "",
                s.get("other_load_cores"),
            ]
        )
    if rows:
        out += [
            "",
            title("Backlog: shipped from offset 0 (run --once), same files for every row"),
            _table(["", "wall s", "CPU s", "user", "sys", "RSS MB", "events/s", "MB/s", "MB/CPU-s", "shipped", "out MB", "other load"], rows, md),
        ]
    rat = result.get("ratios", {})
    if rat:
        parts = [f"{k.replace('_vs_', ' / ')} {v:.2f}x" for k, v in rat.items() if "_vs_" in k]
        out.append(("\n" if md else "") + "ratios (agent MB/s / reference MB/s): " + ", ".join(parts))
        if "policy_cpu_overhead" in rat:
            out.append(f"policy + enrichment CPU over no policy: {100 * rat['policy_cpu_overhead']:+.1f} %")
    steady = [s for k, s in sc.items() if k.startswith("steady_")]
    if steady:
        rows = [
            [
                s["rate"],
                s["writer"]["achieved_rate"],
                s["events_written"],
                s["events_expected"],
                s["events_arrived"],
                s["events_missing"],
                s["events_duplicated"],
                s["agent_cpu_pct"],
                s["agent_max_rss_mb"],
                s["latency_ms"]["p50"],
                s["latency_ms"]["p99"],
                s["latency_ms"]["max"],
                s["drain_s"],
                s["writer"]["cpu_pct"],
                s.get("other_load_cores"),
            ]
            for s in steady
        ]
        out += [
            "",
            title(f"Steady: {steady[0]['config']} config, {steady[0]['seconds']:g} s per rate, rotating writer; latency = written -> in the sink"),
            _table(
                [
                    "rate/s",
                    "achieved",
                    "written",
                    "expected",
                    "arrived",
                    "missing",
                    "dup",
                    "agent CPU %",
                    "RSS MB",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "drain s",
                    "writer CPU %",
                    "other load",
                ],
                rows,
                md,
            ),
        ]
    st = sc.get("stages")
    if st:
        smb = st["sample"]["bytes"] / 1e6
        for kind, label in (("policy", "policy + enrichment"), ("no_policy", "no policy")):
            p = st[kind]
            rows = [[r["step"], r["seconds"], r["mb_per_s"], r["us_per_event"], f"{100 * r['share']:.1f} %"] for r in p["steps"]]
            rows.append(["total (one thread)", p["total_s"], p["mb_per_s"], round(sum(r["us_per_event"] for r in p["steps"]), 2), "100 %"])
            if "agent_overhead" in st and kind in st["agent_overhead"]:
                o = st["agent_overhead"][kind]
                rows.append(["agent CPU beyond the steps", o["seconds"], None, o["us_per_event"], f"{100 * o['share_of_agent']:.1f} % of agent"])
            out += [
                "",
                title(
                    f"Stages, {label}: each step alone, one thread, {smb:,.1f} MB sample, best of {st['repeat']}"
                    + (f" (other load {st['other_load_cores']:.2f} cores)" if "other_load_cores" in st else "")
                ),
                _table(["step", "s", "MB/s", "us/event", "share"], rows, md),
            ]
        out.append(("\n" if md else "") + f"naive msgspec decode+encode, same sample, in process: {st['naive_msgspec_in_process']['mb_per_s']} MB/s")
    out.append("\nother load: cores used by other processes on the machine during the measurement (0 = quiet machine)")
    if md:
        out.append("")
    tg = result.get("targets", [])
    if tg:
        rows = [
            [
                t["name"],
                t["value"],
                f"{t['op']} {t['limit']:g} {t['unit']}".strip(),
                "ok" if t["ok"] else "MISSED",
                f"under load ({t['other_load_cores']:.2f} cores)" if t["under_load"] else "",
            ]
            for t in tg
        ]
        out += ["", title("Targets"), _table(["target", "value", "limit", "", ""], rows, md)]
    prof = result.get("profile")
    if prof:
        for key, label in (("backlog_policy", "backlog, policy + enrichment"), ("steady", "steady")):
            p = prof.get(key)
            if not p:
                continue
            rows = [[r["function"], f"{100 * r['share']:.1f} %"] for r in p["self"][:15]]
            out += [
                "",
                title(
                    f"Profile ({label}; py-spy, {p['samples_working']} working samples; threads: "
                    + ", ".join(f"{t} {100 * v:.0f} %" for t, v in p["threads"].items())
                    + ")"
                ),
                _table(["self time", "share"], rows, md),
            ]
    return "\n".join(out)

"""The targets of issue 17 evaluated on one run's results, and the printed tables (text or Markdown)."""

from __future__ import annotations

from typing import Any

from tests.bench.agentrun import CONFIGS, LABELS
from tests.bench.mixes import describe

RSS_LIMIT_MB = 80.0
FLUENT_BIT_SPEED_MIN = 1.5  # backlog MB/s, policy + detection, over Fluent Bit's
FLUENT_BIT_CPU_MAX = 0.8  # backlog CPU-s per GB, policy + detection, over Fluent Bit's
NAIVE_SPEED_MIN = 1.5  # backlog MB/s, policy + detection, over the naive msgspec loop's
STEADY_CPU_LIMITS = {1000: 1.0, 10000: 10.0, 30000: 30.0}  # % of one core at this rate
LATENCY_SLACK_MS = 250.0  # p99 at 1k events/s <= batch.max_wait_ms + this
LATENCY_RATE = 1000
LOADED_CORES = 0.25  # other processes used more than this during a measurement: its figure is marked
TARGET_CONFIG = "policy_detect"


def ratios(scenarios: dict[str, Any], mixes: list[str]) -> dict[str, dict[str, float]]:
    """Per mix: each agent config's MB/s over each reference's and Fluent Bit's (same files, same run), its CPU-s per
    GB over Fluent Bit's, and the CPU cost of policy + enrichment, and of detection, over the config before."""
    out: dict[str, dict[str, float]] = {}
    for mix in mixes:
        r: dict[str, float] = {}
        fb = scenarios.get(f"{mix}/fluent_bit")
        for kind in CONFIGS:
            agent = scenarios.get(f"{mix}/backlog_{kind}")
            if agent is None:
                continue
            if fb is not None:
                r[f"{kind}_vs_fluent_bit"] = round(agent["mb_per_s"] / fb["mb_per_s"], 3)
                r[f"{kind}_cpu_per_gb_vs_fluent_bit"] = round(agent["cpu_s_per_gb"] / fb["cpu_s_per_gb"], 3)
            for ref in ("cat", "zstd", "naive_msgspec", "naive_msgspec_zstd"):
                ref_figures = scenarios.get(f"{mix}/reference_{ref}")
                if ref_figures is not None:
                    r[f"{kind}_vs_{ref}"] = round(agent["mb_per_s"] / ref_figures["mb_per_s"], 3)
        n, p, d = (scenarios.get(f"{mix}/backlog_{kind}") for kind in CONFIGS)
        if n is not None and p is not None:
            r["policy_cpu_over_no_policy"] = round(p["cpu_s"] / n["cpu_s"] - 1, 3)
        if p is not None and d is not None:
            r["detect_cpu_over_policy"] = round(d["cpu_s"] / p["cpu_s"] - 1, 3)
        if r:
            out[mix] = r
    return out


def _target(name: str, value: float | None, op: str, limit: float, unit: str = "", *sources: dict[str, Any] | None) -> dict[str, Any]:
    ok = value is not None and (value >= limit if op == ">=" else value <= limit)
    load = max(((s or {}).get("other_load_cores") or 0.0 for s in sources), default=0.0)
    return {"name": name, "value": value, "op": op, "limit": limit, "unit": unit, "ok": ok, "other_load_cores": load, "under_load": load > LOADED_CORES}


def targets(scenarios: dict[str, Any], rat: dict[str, dict[str, float]], mixes: list[str]) -> list[dict[str, Any]]:
    out = []
    label = LABELS[TARGET_CONFIG]
    for mix in mixes:
        r = rat.get(mix, {})
        agent = scenarios.get(f"{mix}/backlog_{TARGET_CONFIG}")
        fb, naive = scenarios.get(f"{mix}/fluent_bit"), scenarios.get(f"{mix}/reference_naive_msgspec")
        if f"{TARGET_CONFIG}_vs_fluent_bit" in r:
            out.append(_target(f"{mix}: backlog MB/s, {label} / Fluent Bit", r[f"{TARGET_CONFIG}_vs_fluent_bit"], ">=", FLUENT_BIT_SPEED_MIN, "x", agent, fb))
            out.append(
                _target(
                    f"{mix}: backlog CPU-s per GB, {label} / Fluent Bit",
                    r[f"{TARGET_CONFIG}_cpu_per_gb_vs_fluent_bit"],
                    "<=",
                    FLUENT_BIT_CPU_MAX,
                    "x",
                    agent,
                    fb,
                )
            )
        if f"{TARGET_CONFIG}_vs_naive_msgspec" in r:
            out.append(
                _target(f"{mix}: backlog MB/s, {label} / naive msgspec loop", r[f"{TARGET_CONFIG}_vs_naive_msgspec"], ">=", NAIVE_SPEED_MIN, "x", agent, naive)
            )
        if agent is not None:
            out.append(_target(f"{mix}: backlog peak RSS, {label}", round(agent["max_rss_mb"], 1), "<=", RSS_LIMIT_MB, "MB", agent))
    for key, s in scenarios.items():
        if key.startswith("steady_") and s["rate"] in STEADY_CPU_LIMITS:
            out.append(_target(f"steady {s['rate']}/s: agent CPU, % of one core", s["agent_cpu_pct"], "<=", STEADY_CPU_LIMITS[s["rate"]], "%", s))
    for key, s in scenarios.items():
        if key.startswith("steady_") and s["rate"] == LATENCY_RATE:
            out.append(_target(f"steady {s['rate']}/s: latency p99", s["latency_ms"]["p99"], "<=", s["batch_max_wait_ms"] + LATENCY_SLACK_MS, "ms", s))
    for key, s in scenarios.items():
        if key.startswith("steady_"):
            out.append(_target(f"{key}: peak RSS", s["agent_max_rss_mb"], "<=", RSS_LIMIT_MB, "MB", s))
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


_BACKLOG_ROWS = (
    ("fluent_bit", "Fluent Bit tail -> json -> file"),
    *((f"backlog_{kind}", f"agent, {LABELS[kind]}") for kind in CONFIGS),
    ("reference_cat", "cat > /dev/null"),
    ("reference_zstd", "zstd -3 -T1"),
    ("reference_naive_msgspec", "naive msgspec loop"),
    ("reference_naive_msgspec_zstd", "naive msgspec loop + zstd -3"),
)


def _backlog_table(mix: str, sc: dict[str, Any], md: bool) -> str | None:
    rows = []
    for key, label in _BACKLOG_ROWS:
        s = sc.get(f"{mix}/{key}")
        if s is None:
            continue
        rows.append(
            [
                label,
                s["wall_s"],
                s["cpu_s"],
                round(s["max_rss_mb"], 1),
                round(s["events_per_s"]),
                s["mb_per_s"],
                s.get("cpu_s_per_gb"),
                s.get("cpu_us_per_event"),
                s.get("events_shipped", ""),
                round(s["bytes_out"] / 1e6, 1) if s.get("bytes_out") is not None else "",
                s.get("other_load_cores"),
            ]
        )
    if not rows:
        return None
    headers = ["", "wall s", "CPU s", "RSS MB", "events/s", "MB/s", "CPU-s/GB", "CPU µs/event", "shipped", "out MB", "other load"]
    return _table(headers, rows, md)


def _ratio_lines(r: dict[str, float]) -> list[str]:
    out = []
    for kind in CONFIGS:
        parts = []
        if f"{kind}_vs_fluent_bit" in r:
            parts.append(f"{r[f'{kind}_vs_fluent_bit']:.2f}x Fluent Bit's MB/s, {r[f'{kind}_cpu_per_gb_vs_fluent_bit']:.2f}x its CPU-s/GB")
        if f"{kind}_vs_naive_msgspec" in r:
            parts.append(f"{r[f'{kind}_vs_naive_msgspec']:.2f}x the naive loop's MB/s ({r[f'{kind}_vs_naive_msgspec_zstd']:.2f}x with zstd)")
        if parts:
            out.append(f"{LABELS[kind]}: " + "; ".join(parts))
    if "policy_cpu_over_no_policy" in r:
        out.append(f"CPU of policy + enrichment over no policy: {100 * r['policy_cpu_over_no_policy']:+.1f} %")
    if "detect_cpu_over_policy" in r:
        out.append(f"CPU of detection over policy + enrichment: {100 * r['detect_cpu_over_policy']:+.1f} %")
    return out


def _stages_tables(mix: str, st: dict[str, Any], md: bool, title: Any) -> list[str]:
    out: list[str] = []
    smb = st["sample"]["bytes"] / 1e6
    events = st["sample"]["events"]
    for kind, label in (("policy", "policy + enrichment + detection"), ("no_policy", "no policy")):
        p = st[kind]
        rows = [
            [r["step"], r["seconds"], r["mb_per_s"], round(events / r["seconds"]) if r["seconds"] else None, r["us_per_event"], f"{100 * r['share']:.1f} %"]
            for r in p["steps"]
        ]
        total_us = round(sum(r["us_per_event"] for r in p["steps"]), 2)
        rows.append(["total (one thread)", p["total_s"], p["mb_per_s"], round(events / p["total_s"]), total_us, "100 %"])
        overhead = st.get("agent_overhead", {})
        kinds = ("policy", "policy_detect") if kind == "policy" else ("no_policy",)
        for k in kinds:
            if k in overhead:
                o = overhead[k]
                rows.append([f"agent CPU beyond the steps ({LABELS[k]})", None, None, None, o["us_per_event"], f"{100 * o['share_of_agent']:.1f} % of agent"])
        extra = f", {p['alerts']:,} alerts" if kind == "policy" and "alerts" in p else ""
        out += [
            "",
            title(
                f"[{mix}] stages, {label}: each step alone, one thread, {smb:,.1f} MB sample ({events:,} events{extra}), best of {st['repeat']}"
                + (f" (other load {st['other_load_cores']:.2f} cores)" if "other_load_cores" in st else "")
            ),
            _table(["step", "s", "MB/s", "events/s", "µs/event", "share"], rows, md),
        ]
    out.append(("\n" if md else "") + f"naive msgspec decode+encode, same sample, in process: {st['naive_msgspec_in_process']['mb_per_s']} MB/s")
    return out


def render(result: dict[str, Any], md: bool = False) -> str:
    """The tables, as text for the terminal or (`md`) as Markdown for RESULTS.md."""
    meta, sc = result["meta"], result["scenarios"]

    def title(text: str) -> str:
        return f"**{text}**\n" if md else text

    m = meta["machine"]
    fb = meta["versions"].get("fluent_bit")
    agent = meta.get("agent_label") or f"commit {meta['git']['commit']}{' (uncommitted changes)' if meta['git']['dirty'] else ''}"
    out = [
        f"kube-audit-shipper benchmark: agent {agent} (benchmark at {meta['bench_git']['commit']}), "
        f"{m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, seed {meta['args']['seed']}, {meta['duration_s']:.0f} s, "
        f"load average {meta.get('loadavg_start')} -> {meta.get('loadavg_end')}" + (f", {fb}" if fb else ", no Fluent Bit ($FLUENT_BIT unset)"),
    ]
    mixes = list(dict.fromkeys([*result.get("inputs", {}), *(k.split("/")[0] for k in sc if "/" in k)]))
    for mix in mixes:
        inp = result.get("inputs", {}).get(mix)
        out.append("")
        out.append(title(f"Mix `{mix}`: {describe(mix)}") if md else f"== mix {mix}: {describe(mix)}")
        if inp:
            out.append(
                f"input: {inp['bytes'] / 1e6:,.1f} MB, {inp['events']:,} events (mean {inp['mean_event_bytes']:.0f} B), "
                f"{inp['files']} files, blake2b {inp['blake2b']}" + ("\n" if md else "")
            )
        table = _backlog_table(mix, sc, md)
        if table is not None:
            out += ["", title(f"[{mix}] backlog: shipped from offset 0 (run --once), same files for every row"), table]
        rat = result.get("ratios", {}).get(mix)
        if rat:
            out.append(("\n" if md else "") + "\n".join(f"- {line}" if md else line for line in _ratio_lines(rat)))
        st = sc.get(f"{mix}/stages")
        if st:
            out += _stages_tables(mix, st, md, title)
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
        headers = ["rate/s", "achieved", "written", "expected", "arrived", "missing", "dup", "agent CPU %", "RSS MB", "p50 ms", "p99 ms", "max ms"]
        out += [
            "",
            title(
                f"Steady: {LABELS.get(steady[0]['config'], steady[0]['config'])}, {steady[0]['seconds']:g} s per rate, rotating writer; latency = written -> in the sink"
            ),
            _table([*headers, "drain s", "writer CPU %", "other load"], rows, md),
        ]
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
        out += ["", title("Targets (issue 17)"), _table(["target", "value", "limit", "", ""], rows, md)]
    for key, p in result.get("profile", {}).items():
        if not p:
            continue
        rows = [[r["function"], f"{100 * r['share']:.1f} %"] for r in p["self"][:15]]
        out += [
            "",
            title(
                f"Profile ({key}; py-spy, {p['samples_working']} working samples; threads: "
                + ", ".join(f"{t} {100 * v:.0f} %" for t, v in p["threads"].items())
                + ")"
            ),
            _table(["self time", "share"], rows, md),
        ]
    return "\n".join(out)

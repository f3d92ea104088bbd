"""kube-audit-shipper benchmark suite (issues 4 and 17): ``python -m tests.bench [--quick] [--mix M,...] [options]``.

Scenarios, each on input generated from ``--seed`` (byte-identical for the same mix, seed and sizes):

* backlog, once per input mix (``--mix``, default all of `tests.bench.mixes`: the demo generator's control-plane
  mix, the same with a large cluster's identities and addresses, small Metadata events, the real events of
  tests/data/real-audit): ``--size-mb`` of audit log (rotated every ``--rotate-mb``) shipped from offset 0 by
  ``run --once`` in three configurations (no policy; policy + enrichment; the same + detection); on the same files,
  Fluent Bit tail → json → file when ``$FLUENT_BIT`` names its binary (`tests.bench.fluentbit`), and the references
  ``cat``, ``zstd -3 -T1`` and the naive msgspec loop, with the agent's ratio to each;
* stages, per mix: each step of the per-event work alone on a ``--stages-mb`` sample, in µs per event;
* steady (the first mix): a rotating writer at each of ``--rates`` events/s for ``--seconds``; agent CPU, RSS,
  latency written → in the sink, and a count that every event arrived.

Prints the tables (events/s and µs/event beside MB/s) and writes every figure as JSON (``--out``). Nothing is
asserted about timings; the targets of issue 17 are evaluated and shown. ``--profile`` adds a py-spy profile of the
backlog (policy + detection) of each mix and of the first steady rate (py-spy is not a project dependency).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.bench import backlog, fluentbit, measure, references, report, stages, steady
from tests.bench.agentrun import CONFIGS, POLICY_FILE, agent_argv, agent_config
from tests.bench.inputs import write_backlog
from tests.bench.measure import MB, REPO, Spawner, git_commit, machine, versions
from tests.bench.mixes import MIXES

SCENARIOS = ("backlog", "steady", "stages")
DEFAULT_OUT = REPO / "tests" / "bench" / "out" / "bench.json"
QUICK = {"size_mb": 8.0, "rotate_mb": 3.0, "seconds": 2.0, "rates": "1000,5000", "stages_mb": 4.0, "stages_repeat": 1, "quiet_wait": 0.0}


def scenario_keys(only: list[str], mixes: list[str], rates: list[int], with_fluent_bit: bool) -> list[str]:
    """The keys the JSON must hold for these options (`<mix>/<scenario>` per mix, `steady_<rate>`)."""
    keys: list[str] = []
    for mix in mixes:
        if "backlog" in only:
            keys += [f"{mix}/backlog_{kind}" for kind in CONFIGS] + [f"{mix}/reference_{name}" for name in references.NAMES]
            if with_fluent_bit:
                keys.append(f"{mix}/fluent_bit")
        if "stages" in only:
            keys.append(f"{mix}/stages")
    if "steady" in only:
        keys += [f"steady_{r}" for r in rates]
    return keys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m tests.bench", description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help=f"tiny sizes, for a smoke test ({', '.join(f'{k}={v}' for k, v in QUICK.items())})")
    ap.add_argument("--mix", default="all", help=f"input mixes for backlog and stages, comma-separated, or all (default all: {', '.join(MIXES)})")
    ap.add_argument("--size-mb", type=float, default=1000.0, help="backlog size per mix, MB (default 1000)")
    ap.add_argument("--rotate-mb", type=float, default=100.0, help="the backlog log rotates at this size, MB, like --audit-log-maxsize (default 100)")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each steady rate (default 20)")
    ap.add_argument("--rates", default="1000,10000,30000", help="steady rates, events/s, comma-separated (default 1000,10000,30000)")
    ap.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results file (default {DEFAULT_OUT.relative_to(REPO)})")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown to this file (for RESULTS.md)")
    ap.add_argument("--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable; default all)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"backlog agent configs, comma-separated (default {','.join(CONFIGS)})")
    ap.add_argument("--repeat", type=int, default=1, help="backlog runs per config; the median wall time is reported (default 1)")
    ap.add_argument("--stages-mb", type=float, default=64.0, help="sample size of the stages scenario, MB (default 64)")
    ap.add_argument("--stages-repeat", type=int, default=3, help="passes of the stages scenario; best time per step (default 3)")
    ap.add_argument("--steady-config", choices=CONFIGS, default="policy_detect", help="agent config of the steady runs (default policy_detect)")
    ap.add_argument("--profile", action="store_true", help="also profile the backlog (policy + detection) of each mix and the first steady rate with py-spy")
    ap.add_argument("--workdir", type=Path, default=None, help="where logs and outputs go (default: a new temporary directory, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument(
        "--agent-src",
        type=Path,
        default=REPO,
        help="run the agent (backlog, steady, and the stages scenario's code) from this source tree, e.g. a copy of an "
        "older commit (`git archive <commit> kube_audit_shipper | tar -x -C DIR`), to measure a change (default: this repo)",
    )
    ap.add_argument("--agent-label", default=None, help="what --agent-src is, for the tables (e.g. `538421f + the per-event fast paths`)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="limit for any single process, s (default 1800)")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each measurement, wait up to this many seconds for other processes to use < 0.25 core "
        "(0: do not wait; the load seen during each measurement is reported either way; default 30)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        explicit = {a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
        for key, value in QUICK.items():
            if key not in explicit:
                setattr(args, key, value)
    try:
        args.rate_list = [int(r) for r in str(args.rates).split(",") if r.strip()]
    except ValueError:
        ap.error(f"--rates: expected integers separated by commas, got {args.rates!r}")
    if not args.rate_list or min(args.rate_list) <= 0:
        ap.error("--rates: at least one positive rate")
    if args.size_mb <= 0 or args.rotate_mb <= 0 or args.seconds <= 0 or args.stages_mb <= 0:
        ap.error("sizes and durations must be positive")
    args.mix_list = list(MIXES) if args.mix.strip() == "all" else [m.strip() for m in args.mix.split(",") if m.strip()]
    unknown = [m for m in args.mix_list if m not in MIXES]
    if unknown or not args.mix_list:
        ap.error(f"--mix: unknown {unknown}; known: {', '.join(MIXES)} (or all)")
    args.config_list = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not args.config_list or any(c not in CONFIGS for c in args.config_list):
        ap.error(f"--configs: choose from {', '.join(CONFIGS)}")
    args.only = list(dict.fromkeys(args.only or SCENARIOS))
    return args


def _args_json(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def _backlog(spawner: Spawner, args: argparse.Namespace, mix: str, work: Path, agent_src: Path, fluent_bit: str | None, result: dict[str, Any]) -> None:
    sc = result["scenarios"]
    print(f"[{mix}] backlog: writing {args.size_mb:g} MB of audit log (seed {args.seed}) ...", file=sys.stderr, flush=True)
    log = write_backlog(work / "log" / "audit.log", size_bytes=int(args.size_mb * MB), seed=args.seed, rotate_bytes=int(args.rotate_mb * MB), mix=mix)
    result["inputs"][mix] = log.as_dict()
    print(f"[{mix}] backlog: references (cat, zstd, naive msgspec loop, the same + zstd) ...", file=sys.stderr, flush=True)
    for name, figures in references.run_all(spawner, log, work, args.timeout, references.sink_zstd_level()).items():
        sc[f"{mix}/reference_{name}"] = figures
    if fluent_bit is not None:
        print(f"[{mix}] backlog: Fluent Bit tail -> json -> file ...", file=sys.stderr, flush=True)
        sc[f"{mix}/fluent_bit"] = fluentbit.run(spawner, fluent_bit, log, work, args.timeout)
    print(f"[{mix}] backlog: agent, {args.repeat} run(s) per config ...", file=sys.stderr, flush=True)
    _, figures = backlog.run_backlog(spawner, log, work, agent_src=agent_src, repeat=args.repeat, timeout=args.timeout, kinds=tuple(args.config_list))
    for kind, f in figures.items():
        sc[f"{mix}/backlog_{kind}"] = f
    if args.profile:
        from tests.bench import profiling

        print(f"[{mix}] backlog: profiling the agent (policy + detection) with py-spy ...", file=sys.stderr, flush=True)
        config = agent_config(work, f"profile-backlog-{mix}", log.path, "policy_detect", backfill=True)
        result.setdefault("profile", {})[f"{mix}/backlog_policy_detect"] = profiling.profile(
            spawner, agent_argv(config, once=True), work / f"profile-backlog-{mix}.raw", rate=200, timeout=args.timeout, cwd=agent_src
        )
    shutil.rmtree(work / "log", ignore_errors=True)


def _stages(args: argparse.Namespace, mix: str, work: Path, agent_src: Path, result: dict[str, Any]) -> None:
    print(f"[{mix}] stages: {args.stages_mb:g} MB sample ...", file=sys.stderr, flush=True)
    sample = write_backlog(work / "stages" / "audit.log", size_bytes=int(args.stages_mb * MB), seed=args.seed, rotate_bytes=1 << 62, mix=mix)
    configs = {kind: agent_config(work, f"stages-{kind}", sample.path, kind, backfill=True) for kind in ("policy_detect", "no_policy")}
    waited = measure.settle()
    load = measure.Load()
    st = stages.run_in_child(sample, configs["policy_detect"], configs["no_policy"], args.stages_repeat, agent_src, args.timeout)
    st["other_load_cores"], st["waited_for_quiet_s"] = load.others(0.0), waited
    overhead = {}
    detect_s = next((r["seconds"] for r in st["policy"]["steps"] if r["step"] == "detect"), 0.0)
    steps_s = {"no_policy": st["no_policy"]["total_s"], "policy": st["policy"]["total_s"] - detect_s, "policy_detect": st["policy"]["total_s"]}
    for kind in CONFIGS:
        b = result["scenarios"].get(f"{mix}/backlog_{kind}")
        fixed = result.get("agent_fixed_cost", {}).get(kind, {}).get("cpu_s", 0.0)
        if b is None or b["cpu_s"] < 5 * fixed:  # tiny backlog (--quick): start-up dominates, no figure
            continue
        agent_us = (b["cpu_s"] - fixed) / b["events"] * 1e6
        step_us = steps_s[kind] / sample.events * 1e6
        overhead[kind] = {
            "us_per_event": round(agent_us - step_us, 2),
            "agent_us_per_event": round(agent_us, 2),
            "steps_us_per_event": round(step_us, 2),
            "share_of_agent": round((agent_us - step_us) / agent_us, 4),
        }
    if overhead:
        st["agent_overhead"] = overhead
    result["scenarios"][f"{mix}/stages"] = st
    shutil.rmtree(work / "stages", ignore_errors=True)


def _steady(spawner: Spawner, args: argparse.Namespace, work: Path, agent_src: Path, result: dict[str, Any]) -> None:
    sc = result["scenarios"]
    event_bytes = steady.mean_event_bytes(args.seed)
    for rate in args.rate_list:
        print(f"steady: {rate} events/s for {args.seconds:g} s ...", file=sys.stderr, flush=True)
        sc[f"steady_{rate}"] = steady.run_rate(
            spawner,
            work,
            rate=rate,
            seconds=args.seconds,
            seed=args.seed,
            kind=args.steady_config,
            policy_file=POLICY_FILE,
            event_bytes=event_bytes,
            agent_src=agent_src,
        )
    if args.profile:
        from tests.bench import profiling

        print(f"steady: profiling the agent at {args.rate_list[0]} events/s with py-spy ...", file=sys.stderr, flush=True)
        raw = work / "profile-steady.raw"
        spy = profiling.available()
        if spy is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy; it is not a dependency of the project)")
        argv = [spy, "record", "--rate", "200", "--format", "raw", "--threads", "--duration", str(int(args.seconds)), "--output", str(raw), "--pid"]
        steady.run_rate(
            spawner,
            work / "profile",
            rate=args.rate_list[0],
            seconds=args.seconds,
            seed=args.seed,
            kind=args.steady_config,
            policy_file=POLICY_FILE,
            event_bytes=event_bytes,
            agent_src=agent_src,
            profile_argv=argv,
        )
        result.setdefault("profile", {})["steady"] = {"rate": args.rate_list[0], **profiling.summarize(raw)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    measure.QUIET_MAX_WAIT_S = args.quiet_wait
    fluent_bit = fluentbit.binary() if "backlog" in args.only else None
    result: dict[str, Any] = {
        "meta": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": git_commit(args.agent_src),  # the agent measured
            "bench_git": git_commit(),
            "machine": machine(),
            "versions": {**versions(), "fluent_bit": fluentbit.version(fluent_bit) if fluent_bit else None},
            "args": _args_json(args),
            "agent_src": str(args.agent_src),
            "agent_label": args.agent_label,
            "loadavg_start": measure.loadavg(),
        },
        "inputs": {},
        "scenarios": {},
    }
    temp = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="kas-bench-")) if temp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    agent_src = args.agent_src.resolve()
    try:
        with Spawner() as spawner:
            if "backlog" in args.only:
                print("backlog: agent fixed cost (run --once on an empty log), per config ...", file=sys.stderr, flush=True)
                result["agent_fixed_cost"] = {kind: backlog.fixed_cost(spawner, work, agent_src, args.timeout, kind) for kind in args.config_list}
            for mix in args.mix_list:
                if "backlog" in args.only:
                    _backlog(spawner, args, mix, work, agent_src, fluent_bit, result)
                if "stages" in args.only:
                    _stages(args, mix, work, agent_src, result)
            if "steady" in args.only:
                _steady(spawner, args, work, agent_src, result)
    finally:
        if temp and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep or not temp:
            result["meta"]["workdir"] = str(work)
    result["ratios"] = report.ratios(result["scenarios"], args.mix_list)
    result["targets"] = report.targets(result["scenarios"], result["ratios"], args.mix_list)
    result["meta"]["duration_s"] = round(time.monotonic() - started, 1)
    result["meta"]["loadavg_end"] = measure.loadavg()
    result["meta"]["scenario_keys"] = scenario_keys(args.only, args.mix_list, args.rate_list, fluent_bit is not None)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    missing = [k for k in result["meta"]["scenario_keys"] if k not in result["scenarios"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(report.render(result))
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report.render(result, md=True) + "\n")
    print(f"\nresults: {args.out}")
    if missing:
        print(f"missing scenarios: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load every rule (built-in pack, rule files, Sigma), apply the config's tuning, and build the engine.

Every problem in every file and in the `detect:` section is collected and raised at once as `RulesError`
(a `ConfigError`: `validate` exits 2 and lists them), each as `<file>: <key path>: <message>` or
`detect.<key path>: <message>`. Sigma rules that cannot be evaluated are not errors: they are skipped and
listed in `RuleCatalog.skipped`, with the warnings (`rules lint` prints both).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from importlib import resources
from typing import Any

import msgspec
import yaml

from kube_audit_shipper.errors import ConfigError
from kube_audit_shipper.process.detect.config import DetectConfig, ExceptionsConfig, RuleTuning
from kube_audit_shipper.process.detect.context import Env
from kube_audit_shipper.process.detect.engine import DetectionEngine
from kube_audit_shipper.process.detect.intel import IntelError, SourceIntel
from kube_audit_shipper.process.detect.mitre import tag_warning
from kube_audit_shipper.process.detect.rulefile import parse_rule_document
from kube_audit_shipper.process.detect.sigma import convert_sigma, is_sigma_document
from kube_audit_shipper.process.detect.spec import Aggregate, Dedup, Exceptions, RuleSpec

BUILTIN_PACKAGE = "kube_audit_shipper.process.detect"
BUILTIN_DIR = "rules"


class RulesError(ConfigError):
    """Rule files or the `detect:` section are invalid; `problems` lists every error with file and key path."""

    what = "rule error(s)"


class _RuleLoader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]  # no stubs: SafeLoader is Any
    """SafeLoader that keeps dates as strings (Sigma's `date: 2024-07-11`)."""


_RuleLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class RuleCatalog:
    """Every rule loaded (enabled or not, after tuning), with what loading had to say."""

    def __init__(self) -> None:
        self.specs: list[RuleSpec] = []
        #: Sigma rules (or parts) left out, with why
        self.skipped: list[str] = []
        self.warnings: list[str] = []

    @property
    def enabled(self) -> list[RuleSpec]:
        return [spec for spec in self.specs if spec.enabled]


def parse_rules_text(text: str, source: str, catalog: RuleCatalog, problems: list[str]) -> None:
    """Add the rules of one file's text (YAML, one or more documents, ours or Sigma) to `catalog`."""
    try:
        documents = list(yaml.load_all(text, Loader=_RuleLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problems.append(f"{source}: {where}invalid YAML: {getattr(exc, 'problem', None) or exc}")
        return
    for number, document in enumerate(documents):
        if document is None:
            continue
        prefix = f"{source}" if len(documents) == 1 else f"{source} (document {number + 1})"
        if is_sigma_document(document):
            spec, skipped, warnings = convert_sigma(document, source)
            catalog.skipped.extend(f"{prefix}: {item}" for item in skipped)
            catalog.warnings.extend(f"{prefix}: {item}" for item in warnings)
            if spec is not None:
                catalog.specs.append(spec)
            continue
        specs, found = parse_rule_document(document, source)
        problems.extend(f"{prefix}: {item}" for item in found)
        catalog.specs.extend(specs)


def read_rule_file(path: str, catalog: RuleCatalog, problems: list[str], where: str) -> None:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        problems.append(f"{where}: cannot read {path}: {exc.strerror or exc}")
        return
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8: {exc}")
        return
    parse_rules_text(text, path, catalog, problems)


def builtin_rule_texts() -> list[tuple[str, str]]:
    """(source label, YAML text) of each built-in rule file, in name order."""
    folder = resources.files(BUILTIN_PACKAGE).joinpath(BUILTIN_DIR)
    files = sorted((item for item in folder.iterdir() if item.name.endswith(".yaml")), key=lambda item: item.name)
    return [(f"builtin:{item.name}", item.read_text(encoding="utf-8")) for item in files]


def expand_rule_files(patterns: Iterable[str], key: str, problems: list[str]) -> list[tuple[str, str]]:
    """(path, key path) of each rule file; globs expanded in name order, a missing plain path is a problem."""
    out: list[tuple[str, str]] = []
    for index, pattern in enumerate(patterns):
        where = f"{key}[{index}]"
        if glob.has_magic(pattern):
            out.extend((path, where) for path in sorted(glob.glob(pattern)) if os.path.isfile(path))
        elif not os.path.exists(pattern):
            problems.append(f"{where}: no such file: {pattern}")
        else:
            out.append((pattern, where))
    return out


def load_catalog(config: DetectConfig, extra_rule_files: Iterable[str] = (), *, key: str = "detect") -> RuleCatalog:
    """Every rule the config names (built-ins unless switched off, rule_files, then `extra_rule_files`), tuned.

    Raises `RulesError` listing every problem."""
    problems: list[str] = []
    catalog = RuleCatalog()
    if config.builtin_rules:
        for source, text in builtin_rule_texts():
            parse_rules_text(text, source, catalog, problems)
    files = expand_rule_files(config.rule_files, f"{key}.rule_files", problems)
    files += expand_rule_files(extra_rule_files, "--rules", problems)
    for path, where in files:
        read_rule_file(path, catalog, problems, where)
    seen: dict[str, str] = {}
    for spec in catalog.specs:
        if spec.id in seen:
            problems.append(f"{spec.source}: rule id {spec.id!r} is already defined in {seen[spec.id]}")
        else:
            seen[spec.id] = spec.source
    by_id = {spec.id: spec for spec in catalog.specs}
    for rule_id, tuning in config.rules.items():
        if rule_id not in by_id:
            problems.append(f"{key}.rules.{rule_id}: no rule has this id (built-in or from the rule files)")
            continue
        by_id[rule_id] = tune(by_id[rule_id], tuning, f"{key}.rules.{rule_id}", problems)
    catalog.specs = [by_id[spec.id] if seen[spec.id] == spec.source else spec for spec in catalog.specs]
    for spec in catalog.specs:
        catalog.warnings.extend(f"{spec.source}: {spec.id}: {note}" for tag in spec.mitre if (note := tag_warning(tag)))
    if problems:
        raise RulesError(problems)
    return catalog


def exceptions_of(config: ExceptionsConfig) -> Exceptions:
    return Exceptions(
        users=tuple(config.users),
        groups=tuple(config.groups),
        namespaces=tuple(config.namespaces),
        user_agents=tuple(config.user_agents),
        source_cidrs=tuple(config.source_cidrs),
    )


def tune(spec: RuleSpec, tuning: RuleTuning, where: str, problems: list[str]) -> RuleSpec:
    """`spec` with the config's changes; a change that does not fit the rule is a problem."""
    changes: dict[str, Any] = {}
    if tuning.enabled is not None:
        changes["enabled"] = tuning.enabled
    if tuning.severity is not None:
        changes["severity"] = tuning.severity
    if tuning.exceptions is not None:
        changes["exceptions"] = spec.exceptions.merged(exceptions_of(tuning.exceptions))
    aggregate = spec.aggregate
    if aggregate is None:
        for name in ("window_s", "threshold"):
            if getattr(tuning, name) is not None:
                problems.append(f"{where}.{name}: {spec.id} is not an aggregate rule")
        if tuning.dedup_s is not None:
            if spec.dedup is None:
                problems.append(f"{where}.dedup_s: {spec.id} has no dedup (and is not an aggregate rule)")
            else:
                changes["dedup"] = Dedup(by=spec.dedup.by, period_s=tuning.dedup_s)
    else:
        changes["aggregate"] = _tune_aggregate(aggregate, tuning, where, problems)
    return msgspec.structs.replace(spec, **changes) if changes else spec


def _tune_aggregate(aggregate: Aggregate, tuning: RuleTuning, where: str, problems: list[str]) -> Aggregate:
    threshold = dict(aggregate.threshold)
    names = aggregate.metric_names()
    for metric, bounds in (tuning.threshold or {}).items():
        if metric not in names:
            problems.append(f"{where}.threshold.{metric}: not a metric of this rule ({', '.join(names)})")
            continue
        threshold[metric] = tuple((op, float(value)) for op in ("gt", "ge", "lt", "le") if (value := getattr(bounds, op)) is not None)
    return msgspec.structs.replace(
        aggregate,
        window_s=tuning.window_s if tuning.window_s is not None else aggregate.window_s,
        dedup_s=tuning.dedup_s if tuning.dedup_s is not None else aggregate.dedup_s,
        threshold=tuple(threshold.items()),
    )


def build_env(config: DetectConfig, *, shared_admin_users: Iterable[str], system_user_prefixes: Iterable[str], key: str = "detect") -> Env:
    """The engine's environment; opens the geoip databases and reads the risky lists (problems → RulesError)."""
    intel = None
    if config.geoip or config.risky_cidrs:
        try:
            intel = SourceIntel(config.geoip, config.risky_cidrs)
        except IntelError as exc:
            raise RulesError([f"{key}: {problem}" for problem in exc.problems]) from exc
    return Env(shared_admin_users=shared_admin_users, system_user_prefixes=system_user_prefixes, internal_cidrs=config.internal_cidrs, intel=intel)


def build_engine(
    config: DetectConfig,
    *,
    shared_admin_users: Iterable[str] = ("kubernetes-admin",),
    system_user_prefixes: Iterable[str] = ("system:", "eks:"),
    extra_rule_files: Iterable[str] = (),
    key: str = "detect",
) -> tuple[DetectionEngine, RuleCatalog]:
    """The engine for a `detect:` section (identity settings: pass the config's `enrich.derived` values)."""
    catalog = load_catalog(config, extra_rule_files, key=key)
    env = build_env(config, shared_admin_users=shared_admin_users, system_user_prefixes=system_user_prefixes, key=key)
    engine = DetectionEngine(
        catalog.enabled,
        env=env,
        global_exceptions=exceptions_of(config.exceptions),
        max_tracked_requests=config.max_tracked_requests,
        max_dedup_keys=config.max_dedup_keys,
        max_groups_per_rule=config.max_groups_per_rule,
        max_distinct_values=config.max_distinct_values,
    )
    return engine, catalog

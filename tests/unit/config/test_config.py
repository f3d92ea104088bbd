"""Unit tests for kube_audit_shipper.config, kube_audit_shipper.config_convert and kube_audit_shipper.config_subst."""

from __future__ import annotations

import textwrap
from pathlib import Path

import msgspec
import pytest
import yaml

from kube_audit_shipper.config import Config, load, parse
from kube_audit_shipper.config_convert import convert_all, describe
from kube_audit_shipper.config_subst import substitute
from kube_audit_shipper.delivery.config import BatchConfig, RetryConfig
from kube_audit_shipper.errors import ConfigError
from kube_audit_shipper.sinks.file.config import FileSinkConfig
from tests.support.corpus import REPO

MINIMAL = {"sinks": [{"name": "a", "type": "file", "path": "/x"}]}


def problems(data: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse(data, env=env or {})
    return ei.value.problems


def load_problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load(path, env=env or {})
    assert ei.value.source == str(path)
    return ei.value.problems


def sink(**kw: object) -> dict[str, object]:
    return {"name": "a", "type": "file", "path": "/x", **kw}


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


# -- valid configs ---------------------------------------------------------------------------------


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    cfg = parse(MINIMAL, env={})
    assert isinstance(cfg, Config)
    (s,) = cfg.sinks
    assert isinstance(s, FileSinkConfig)
    assert (s.name, s.path) == ("a", "/x")
    assert s.compression == "zstd" and s.rotate_bytes >= 1 << 20
    assert s.batch is None and cfg.batch_for(s) is cfg.batch
    assert cfg.input.paths == ["/var/log/kubernetes/audit/audit.log"]
    assert cfg.state_dir == "/var/lib/kube-audit-shipper"
    assert cfg.node  # the hostname when node_name is not set
    # independent check: msgspec's own validation of the same document gives the same struct
    assert cfg == msgspec.convert(MINIMAL, Config)
    # and the defaults satisfy every bound: a round trip through builtins is accepted by msgspec
    assert msgspec.convert(msgspec.to_builtins(cfg), Config) == cfg
    # from a file, too
    p = write(tmp_path, "sinks: [{name: a, type: file, path: /x}]\n")
    assert load(p, env={}) == cfg


def test_full_valid_config_matches_msgspec(tmp_path: Path) -> None:
    text = """
        state_dir: /state
        node_name: cp-1
        input:
          paths: [/var/log/a/*.log, /var/log/b/audit.log]
          exclude: ["*.gz"]
          start_at: end
          backfill_rotated: true
          max_line_bytes: 2048
        batch: {max_events: 10, max_bytes: 4096, max_wait_ms: 0}
        sinks:
          - name: one
            type: file
            path: /out/one
            compression: none
            rotate_bytes: 2097152
            batch: {max_events: 5}
            retry: {initial_ms: 10, max_ms: 20, multiplier: 1.5, max_retry_age_s: 60}
            concurrency: 1
          - {name: two, type: file, path: /out/two, file_prefix: audit.node-1}
        checkpoint: {flush_interval_ms: 10}
        deadletter: {max_bytes: 1048576, max_event_bytes: 0}
        metrics: {listen: null}
        memory_limit_bytes: 1048576
        shutdown_timeout_s: 2
    """
    p = write(tmp_path, text)
    cfg = load(p, env={})
    assert cfg == msgspec.convert(yaml.safe_load(textwrap.dedent(text)), Config)
    one, two = cfg.sinks
    assert one.batch == BatchConfig(max_events=5) and cfg.batch_for(one) is one.batch
    assert cfg.batch_for(two) is cfg.batch
    assert one.retry == RetryConfig(initial_ms=10, max_ms=20, multiplier=1.5, max_retry_age_s=60)
    assert cfg.metrics.address() is None
    assert cfg.shutdown_timeout_s == 2.0 and cfg.node == "cp-1"


def test_empty_file_reports_missing_sinks(tmp_path: Path) -> None:
    assert load_problems(write(tmp_path, "")) == ["sinks: required key missing"]
    assert load_problems(write(tmp_path, "# only a comment\n", "c.yaml")) == ["sinks: required key missing"]


def test_repo_config_files_load() -> None:
    files = sorted((REPO / "config").glob("*.yaml"))
    assert files, f"no config/*.yaml in {REPO}"
    for path in files:
        cfg = load(path, env={})
        assert isinstance(cfg, Config), path
        assert len(cfg.sinks) >= 1


# -- every error, with its key path ----------------------------------------------------------------


def test_several_errors_are_all_listed(tmp_path: Path) -> None:
    text = """
        bogus: 1
        input:
          paths: [""]
          start_at: middle
        batch: {max_events: 0}
        sinks:
          - name: a
            type: file
            path: /x
            rotate_bytes: big
            compression: gzip
            retry: {initial_ms: -1}
          - {name: b, type: kafka}
          - {name: c, type: file}
        checkpoint: {flush_interval_ms: fast}
    """
    got = load_problems(write(tmp_path, text))
    assert 'sinks[0].rotate_bytes: expected int >= 1048576, got "big"' in got
    expected_prefixes = {
        "bogus: unknown key": None,
        "input.paths[0]: expected str": '""',
        "input.start_at: expected": '"middle"',
        "batch.max_events: expected int >= 1": "0",
        "sinks[0].rotate_bytes: expected int >= 1048576": '"big"',
        "sinks[0].compression: expected": '"gzip"',
        "sinks[0].retry.initial_ms: expected int >= 1": "-1",
        "sinks[1].type: unknown type": '"kafka"',
        "sinks[2].path: required key missing": None,
        "checkpoint.flush_interval_ms: expected int >= 10": '"fast"',
    }
    for prefix, value in expected_prefixes.items():
        hits = [p for p in got if p.startswith(prefix)]
        assert len(hits) == 1, (prefix, got)
        if value is not None:
            assert value in hits[0].removeprefix(prefix), hits[0]
    assert len(got) == len(expected_prefixes), got
    # the exception text lists them all, with the file
    with pytest.raises(ConfigError) as ei:
        load(tmp_path / "config.yaml", env={})
    msg = str(ei.value)
    assert msg.startswith(f"{len(got)} config error(s) in {tmp_path / 'config.yaml'}:")
    assert all(p in msg for p in got)


def test_bounds_and_literals_in_messages() -> None:
    got = problems({"sinks": [sink(compression="gzip", compression_level=20, file_prefix="a b")], "input": {"start_at": 1}})
    assert 'sinks[0].compression: expected "zstd" or "none", got "gzip"' in got
    assert "sinks[0].compression_level: expected int >= 1 and <= 19, got 20" in got
    assert any(p.startswith("sinks[0].file_prefix: expected str matching ") and p.endswith('got "a b"') for p in got)
    assert 'input.start_at: expected "beginning" or "end", got 1' in got
    assert len(got) == 4


def test_unknown_keys_with_path_at_every_level() -> None:
    got = problems(
        {
            "sinks": [sink(extra=1, retry={"initial_ms": 5, "jitter": True}, batch={"max_evnts": 3})],
            "input": {"pathz": ["/a"]},
            "metrics": {"listen": "127.0.0.1:1", "port": 2},
            "top": None,
        }
    )
    for path in ("sinks[0].extra", "sinks[0].retry.jitter", "sinks[0].batch.max_evnts", "input.pathz", "metrics.port", "top"):
        assert sum(p.startswith(f"{path}: unknown key") for p in got) == 1, (path, got)
    assert len(got) == 6
    known = next(p for p in got if p.startswith("sinks[0].retry.jitter"))
    for k in ("initial_ms", "max_ms", "multiplier", "max_retry_age_s"):
        assert k in known


def test_unknown_key_suggests_the_close_spelling() -> None:
    got = problems({"sinks": [sink(**{"rotate-bytes": 2 << 20})], "Memory_Limit_Bytes": 1 << 20})
    assert "sinks[0].rotate-bytes: unknown key (did you mean 'rotate_bytes'?)" in got
    assert "Memory_Limit_Bytes: unknown key (did you mean 'memory_limit_bytes'?)" in got


def test_unknown_and_missing_sink_type() -> None:
    got = problems({"sinks": [{"name": "a", "type": "kafka", "brokers": ["x"]}, {"name": "b", "path": "/y"}, sink(name="c")]})
    assert 'sinks[0].type: unknown type "kafka"; expected one of file, loki, s3, sls' in got
    assert any(p.startswith("sinks[1].type: required key missing") and "file" in p for p in got)
    assert len(got) == 2  # sinks[2] is fine; nothing is reported for the keys of a sink of unknown type


def test_missing_required_keys() -> None:
    assert problems({}) == ["sinks: required key missing"]
    got = problems({"sinks": [{"type": "file"}]})
    assert sorted(got) == ["sinks[0].name: required key missing", "sinks[0].path: required key missing"]


def test_wrong_types_at_nested_levels() -> None:
    got = problems(
        {
            "sinks": [5, sink(concurrency=True, batch={"max_wait_ms": "1s"}, retry=[1])],
            "input": ["/a"],
            "node_name": 5,
            "shutdown_timeout_s": "soon",
            "state_dir": "",
        }
    )
    expected = {
        "sinks[0]: expected mapping, got 5",
        "sinks[1].concurrency: expected int >= 1 and <= 64, got true",
        'sinks[1].batch.max_wait_ms: expected int >= 0 and <= 3600000, got "1s"',
        "sinks[1].retry: expected mapping, got [1]",
        'input: expected mapping, got ["/a"]',
        "node_name: expected str or null, got 5",
        'shutdown_timeout_s: expected float >= 0 and <= 3600, got "soon"',
        'state_dir: expected str length >= 1, got ""',
    }
    assert set(got) == expected, got
    assert len(got) == len(expected)


def test_sinks_not_a_list() -> None:
    got = problems({"sinks": {"name": "a", "type": "file", "path": "/x"}})
    assert len(got) == 1 and got[0].startswith("sinks: expected list")


def test_empty_sinks_list_reports_min_length() -> None:
    got = problems({"sinks": []})
    assert len(got) == 1 and got[0].startswith("sinks: ") and got[0].endswith("got []")
    assert "length >= 1" in got[0], got[0]  # the list *is* a list of mappings: say what is wrong with it


def test_long_values_are_shortened() -> None:
    (p,) = problems({"sinks": [sink(rotate_bytes="x" * 500)]})
    assert p.startswith("sinks[0].rotate_bytes: expected int >= 1048576, got ")
    assert len(p) < 200 and p.endswith("...")


def test_cross_field_checks_are_reported_at_their_struct() -> None:
    assert problems({"sinks": [sink(retry={"initial_ms": 5, "max_ms": 1})]}) == ["sinks[0].retry: max_ms (1) must be >= initial_ms (5)"]
    (p,) = problems({**MINIMAL, "metrics": {"listen": "127.0.0.1:99999"}})
    assert p.startswith("metrics: ") and "99999" in p


def test_duplicate_sink_names() -> None:
    got = problems({"sinks": [sink(name="a"), sink(name="b", path="/y"), sink(name="a", path="/z")]})
    assert len(got) == 1
    assert "sinks[2].name: duplicate sink name 'a'" in got[0]


def test_duplicate_sink_names_reported_together_with_other_errors() -> None:
    got = problems({"sinks": [sink(name="a"), sink(name="a", path="/y")], "batch": {"max_events": 0}})
    assert any(p.startswith("batch.max_events: ") for p in got), got
    assert any("sinks[1].name: duplicate sink name 'a'" in p for p in got), got


# -- YAML problems ---------------------------------------------------------------------------------


def test_invalid_yaml_reports_line_and_column(tmp_path: Path) -> None:
    (p,) = load_problems(write(tmp_path, "sinks:\n  - name: a\n\ttype: file\n"))  # a tab at line 3, column 1
    assert p.startswith("line 3, column 1: invalid YAML")
    (p,) = load_problems(write(tmp_path, "state_dir: /a\nsinks: a: b\n", "b.yaml"))  # second ':' of line 2 at column 9
    assert p.startswith("line 2, column 9: invalid YAML")


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("42\n", "int"), ("just text\n", "str")])
def test_non_mapping_root(tmp_path: Path, text: str, kind: str) -> None:
    assert load_problems(write(tmp_path, text)) == [f"<root>: expected a mapping of keys, got {kind}"]


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    (p,) = load_problems(tmp_path / "missing.yaml")
    assert p.startswith("cannot read config file")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("state_dir: /é\n".encode("latin-1"))
    (p,) = load_problems(bad)
    assert "not UTF-8" in p


# -- substitution ----------------------------------------------------------------------------------


def test_env_var_and_default(tmp_path: Path) -> None:
    cfg = parse(
        {
            "state_dir": "${STATE:-/default/state}",
            "node_name": "${NODE:-fallback}",
            "sinks": [sink(path="/out/${CLUSTER}/audit", file_prefix="${PREFIX:-audit}")],
        },
        env={"CLUSTER": "prod", "NODE": "", "PREFIX": "cp"},
    )
    assert cfg.state_dir == "/default/state"  # unset -> default
    assert cfg.node_name == "fallback"  # set but empty -> default
    assert cfg.sinks[0].path == "/out/prod/audit"
    assert cfg.sinks[0].file_prefix == "cp"


def test_env_default_from_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAS_TEST_DIR", "/from/env")
    cfg = parse({"sinks": [sink(path="${KAS_TEST_DIR}")]})
    assert cfg.sinks[0].path == "/from/env"


def test_several_placeholders_in_one_value() -> None:
    cfg = parse({"sinks": [sink(path="/${A}/${B:-b}/${A}")]}, env={"A": "x"})
    assert cfg.sinks[0].path == "/x/b/x"


def test_file_placeholder_strips_one_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "one").write_text("/from/file\n")
    (tmp_path / "two").write_text("/from/file2\n\n")
    (tmp_path / "none").write_text("/from/file3")
    cfg = parse(
        {"state_dir": f"${{file:{tmp_path / 'one'}}}", "node_name": f"${{file:{tmp_path / 'two'}}}", "sinks": [sink(path=f"${{file:{tmp_path / 'none'}}}")]},
        env={},
    )
    assert cfg.state_dir == "/from/file"
    assert cfg.node_name == "/from/file2\n"
    assert cfg.sinks[0].path == "/from/file3"


def test_missing_file_placeholder_reported_with_key_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    got = problems({"sinks": [sink(path=f"/a/${{file:{missing}}}")]})
    assert len(got) == 1
    assert got[0].startswith(f"sinks[0].path: cannot read ${{file:{missing}}}")


def test_dollar_dollar_is_a_literal() -> None:
    cfg = parse({"sinks": [sink(path="/x/$${HOME}/$${file:/etc/passwd}")]}, env={"HOME": "/root"})
    assert cfg.sinks[0].path == "/x/${HOME}/${file:/etc/passwd}"


def test_missing_variable_reported_with_its_key_path() -> None:
    got = problems({"state_dir": "${NOPE_STATE}", "sinks": [sink(path="/out/${NOPE_DIR}/x")], "input": {"paths": ["/ok", "${NOPE_PATH}"]}})
    assert "sinks[0].path: environment variable NOPE_DIR is not set (used as ${NOPE_DIR})" in got
    assert any(p.startswith("state_dir: environment variable NOPE_STATE is not set") for p in got)
    assert any(p.startswith("input.paths[1]: environment variable NOPE_PATH is not set") for p in got)


def test_bad_placeholder_syntax_reported() -> None:
    got = problems({"sinks": [sink(path="/x/${1BAD}")]})
    assert len(got) == 1 and got[0].startswith("sinks[0].path: bad placeholder ${1BAD}")


def test_whole_value_placeholder_becomes_int_for_int_fields(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """
        sinks:
          - name: a
            type: file
            path: /x
            rotate_bytes: ${ROTATE}
            compression_level: "${LEVEL:-5}"
        memory_limit_bytes: ${MEM}
        shutdown_timeout_s: ${GRACE}
        input: {backfill_rotated: "${BACKFILL}"}
        """,
    )
    cfg = load(p, env={"ROTATE": "2097152", "MEM": "4194304", "GRACE": "1.5", "BACKFILL": "true"})
    assert cfg.sinks[0].rotate_bytes == 2097152
    assert cfg.sinks[0].compression_level == 5
    assert cfg.memory_limit_bytes == 4194304
    assert cfg.shutdown_timeout_s == 1.5
    assert cfg.input.backfill_rotated is True
    # an int field given a non-number through a placeholder is a normal conversion error
    got = load_problems(p, {"ROTATE": "big", "MEM": "4194304", "GRACE": "1", "BACKFILL": "false"})
    assert got == ['sinks[0].rotate_bytes: expected int >= 1048576, got "big"']


def test_whole_value_placeholder_stays_a_string_for_string_fields() -> None:
    cfg = parse({"node_name": "${NODE}", "sinks": [sink(file_prefix="${PREFIX}", path="${DIR}")]}, env={"NODE": "1234", "PREFIX": "2026", "DIR": "true"})
    assert cfg.node_name == "1234"
    assert cfg.sinks[0].file_prefix == "2026"
    assert cfg.sinks[0].path == "true"


def test_embedded_placeholder_stays_a_string() -> None:
    cfg = parse({"sinks": [sink(path="/data/${N}")]}, env={"N": "42"})
    assert cfg.sinks[0].path == "/data/42"


def test_substituted_yaml_syntax_does_not_change_structure() -> None:
    evil = "x\nsinks: []\n- {a: b}"
    cfg = parse({"sinks": [sink(path="${EVIL}")]}, env={"EVIL": evil})
    assert cfg.sinks[0].path == evil
    assert len(cfg.sinks) == 1


def test_keys_are_not_substituted() -> None:
    data, errors = substitute({"${K}": "v", "a": ["${X}"]}, {"K": "key", "X": "1"})
    assert data == {"${K}": "v", "a": ["1"]}  # substituted values stay strings; typing happens at conversion
    assert errors == []


def test_substitute_leaves_non_strings_alone() -> None:
    data, errors = substitute({"a": 1, "b": None, "c": [True, 2.5], "d": "no placeholder $HOME"}, {})
    assert data == {"a": 1, "b": None, "c": [True, 2.5], "d": "no placeholder $HOME"}
    assert errors == []


# -- converter internals ---------------------------------------------------------------------------


def test_describe() -> None:
    from typing import Annotated, Literal

    assert describe(Annotated[int, msgspec.Meta(ge=1 << 20)]) == "int >= 1048576"
    assert describe(Literal["beginning", "end"]) == '"beginning" or "end"'
    assert describe(Annotated[str, msgspec.Meta(min_length=1)] | None) == "str length >= 1 or null"
    assert describe(BatchConfig) == "mapping"


def test_convert_all_collects_instead_of_raising() -> None:
    value, errors = convert_all({"max_events": "x", "max_bytes": 1, "nope": 1}, BatchConfig)
    assert sorted(errors) == sorted(
        [
            'max_events: expected int >= 1 and <= 1000000, got "x"',
            "max_bytes: expected int >= 1024 and <= 1073741824, got 1",
            "nope: unknown key; known keys: max_bytes, max_events, max_wait_ms",
        ]
    )
    value, errors = convert_all({"max_events": 2}, BatchConfig)
    assert errors == [] and value == BatchConfig(max_events=2)

"""kube_audit_shipper.obs.logs: rate limiting of repeated records, secret scrubbing in both formats, journald priorities."""

from __future__ import annotations

import io
import json
import logging
import os
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kube_audit_shipper.obs import logs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """setup() replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for h in root.handlers[:]:
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def _handler(clock: Clock, fmt: str = "text", **kw: object) -> tuple[logs.LogHandler, io.StringIO, logging.Logger]:
    buf = io.StringIO()
    handler = logs.LogHandler(buf, rate_limit_s=60, clock=clock, journal=False, **kw)  # type: ignore[arg-type]
    handler.setFormatter(logs.JsonFormatter() if fmt == "json" else logs.TextFormatter())
    logger = logging.getLogger(f"kas.test.{id(handler)}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    return handler, buf, logger


# -- rate limiting --------------------------------------------------------------------------------


def test_repeats_within_the_interval_are_counted_then_summarised() -> None:
    clock = Clock()
    handler, buf, log = _handler(clock, "json")
    for i in range(10):
        log.error("send failed: connection refused", extra={"sink": "sls", "attempt": i})
        clock.now += 1
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [x["msg"] for x in lines] == ["send failed: connection refused"]
    assert lines[0]["attempt"] == 0

    clock.now += 60  # the window is over: the next record (any record) brings the summary out
    log.info("something else")
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert len(lines) == 3
    summary = lines[1]
    assert summary["level"] == "error"
    assert summary["msg"] == "send failed: connection refused (repeated 9 more times in 9s)"
    assert summary["repeated"] == 9
    assert summary["attempt"] == 9  # the fields of the last record held back
    assert lines[2]["msg"] == "something else"

    log.error("send failed: connection refused")  # a new window: written again
    assert json.loads(buf.getvalue().splitlines()[-1])["msg"] == "send failed: connection refused"
    handler.close()


def test_subjects_in_string_fields_are_separate_numbers_are_not() -> None:
    """The agent's messages are constant, with the subject in fields: two files or two sinks are
    two keys; the attempt number of a retry is not part of the key."""
    clock = Clock()
    handler, buf, log = _handler(clock, "json")
    for path in ("/a/audit.log", "/b/audit.log", "/a/audit.log"):
        log.info("new file", extra={"path": path, "offset": 0})
    for attempt in range(1, 6):
        log.warning("sink send failed; retrying", extra={"sink": "sls", "attempt": attempt, "retry_in_s": 0.5 * attempt, "reason": "timeout"})
    log.warning("sink send failed; retrying", extra={"sink": "s3", "attempt": 1, "retry_in_s": 0.5, "reason": "timeout"})
    log.warning("sink send failed; retrying", extra={"sink": "sls", "attempt": 6, "retry_in_s": 3.0, "reason": "HTTP 403"})
    docs = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [(d["msg"], d.get("path") or d.get("sink"), d.get("reason")) for d in docs] == [
        ("new file", "/a/audit.log", None),
        ("new file", "/b/audit.log", None),
        ("sink send failed; retrying", "sls", "timeout"),
        ("sink send failed; retrying", "s3", "timeout"),
        ("sink send failed; retrying", "sls", "HTTP 403"),
    ]
    handler.close()
    tail = [json.loads(x) for x in buf.getvalue().splitlines()[5:]]
    assert sorted((d["msg"], d["repeated"]) for d in tail) == [
        ("new file (repeated 1 more times in 0s)", 1),
        ("sink send failed; retrying (repeated 4 more times in 0s)", 4),
    ]


def test_key_is_logger_level_and_message() -> None:
    clock = Clock()
    handler, buf, log = _handler(clock)
    other = logging.getLogger(log.name + ".child")
    other.propagate = False
    other.handlers[:] = [handler]
    log.error("disk full")
    log.error("disk full")  # held back
    log.warning("disk full")  # other level
    other.error("disk full")  # other logger
    log.error("disk full on %s", "/var")  # other message (args are part of the message)
    log.error("disk full on %s", "/var")  # held back
    assert len(buf.getvalue().splitlines()) == 4
    handler.close()
    assert buf.getvalue().count("repeated 1 more times") == 2  # close() summarises open windows


def test_debug_is_never_held_back_and_zero_disables() -> None:
    clock = Clock()
    handler, buf, log = _handler(clock)
    for _ in range(5):
        log.debug("tick")
    assert len(buf.getvalue().splitlines()) == 5
    handler.close()

    buf2 = io.StringIO()
    off = logs.LogHandler(buf2, rate_limit_s=0, journal=False)
    off.setFormatter(logs.TextFormatter())
    log.handlers[:] = [off]
    for _ in range(5):
        log.error("boom")
    assert len(buf2.getvalue().splitlines()) == 5


def test_nothing_is_summarised_when_nothing_was_held_back() -> None:
    clock = Clock()
    handler, buf, log = _handler(clock)
    log.error("once")
    clock.now += 120
    log.error("twice, far apart")
    handler.close()
    assert "repeated" not in buf.getvalue()


def test_the_number_of_tracked_messages_is_bounded() -> None:
    clock = Clock()
    handler, buf, log = _handler(clock, max_keys=3)
    for i in range(3):
        log.error("e%d", i)
    log.error("e0")  # held back
    log.error("e3")  # evicts e0's window early, with its summary
    text = buf.getvalue()
    assert "e0 (repeated 1 more times in 0s)" in text
    assert len(handler._windows) == 3
    log.error("e0")  # its window was closed: written again
    assert buf.getvalue().splitlines()[-1].endswith("e0")
    handler.close()


def test_a_bad_format_string_does_not_break_logging(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    handler, buf, log = _handler(clock)
    raise_exceptions = logging.raiseExceptions
    logging.raiseExceptions = False  # what a production process does with a broken record
    try:
        log.error("%d items", "not a number")
    finally:
        logging.raiseExceptions = raise_exceptions
    log.error("still logging")
    assert buf.getvalue().splitlines()[-1].endswith("still logging")
    handler.close()


def test_setup_installs_one_rate_limited_handler(root_logger: logging.Logger) -> None:
    buf = io.StringIO()
    handler = logs.setup("info", "text", stream=buf, journal=False)
    assert root_logger.handlers == [handler]
    for _ in range(100):
        logging.getLogger("kube_audit_shipper.delivery.engine").error("sink blocked", extra={"sink": "s3"})
    logging.getLogger("kube_audit_shipper.x").debug("not at info level")
    handler.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    assert "ERROR" in lines[0] and "sink blocked sink=s3" in lines[0]
    assert "sink blocked (repeated 99 more times" in lines[1] and "repeated=99" in lines[1]
    # setup again (e.g. in tests): the previous handler is replaced and closed
    h2 = logs.setup("info", "json", stream=io.StringIO(), journal=False)
    assert root_logger.handlers == [h2]


# -- secrets -------------------------------------------------------------------------------------

SECRETS = {
    "access": "LTAI5tQwErTyUiOpAsDf",
    "sk": "Sk3yS3cr3tValue/With+Slash=",
    "pw": "hunter2-but-longer",
    "bearer": "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl",
    "sts": "CAIS8wF1q6Ft5B2yfSjIr5bStsTokenValue",
    "hash": "0123456789abcdef-hash-key",
    "url": "urlPassw0rd",
    "quoted": 'quo"ted secret',
    "registered": "a-value-only-known-by-registration",
    "cookie": "sessionid-7f7f7f7f7f",
}


def _emit_secret_records(log: logging.Logger) -> None:
    s = SECRETS
    log.error("request failed: Authorization: Bearer %s", s["bearer"], extra={"sink": "sls", "status": 403})
    log.error(
        "signed request headers",
        extra={"headers": {"Authorization": f"acs {s['access']}:{s['sk']}", "x-acs-security-token": s["sts"], "Host": "cn-hangzhou.log.aliyuncs.com"}},
    )
    log.warning("config: access_key_secret=%s password: %s", s["sk"], s["pw"])
    log.warning("sink config %s", {"name": "sls", "access_key_id": "LTAI-id", "access_key_secret": s["sk"], "security_token": s["sts"]})
    log.info("redaction", extra={"enrich": {"redact": {"mode": "hash", "hash_key": s["hash"]}}})
    log.info("token in a field", extra={"token": s["bearer"], "password": s["pw"], "Authorization": "Bearer " + s["bearer"]})
    log.info("connecting to https://user:%s@loki.example:3100/push?token=%s&x=1", s["url"], s["sts"])
    log.info('json body {"password": "%s", "user": "admin"}', s["quoted"].replace('"', '\\"'))
    log.info("header dump x-acs-security-token=%s; Cookie: %s", s["sts"], s["cookie"])
    log.info("startup with %s", s["registered"])
    log.info("raw bearer %s in text", "Bearer " + s["sk"])

    class SinkConfig:
        def __repr__(self) -> str:
            return f"SinkConfig(name='sls', access_key_secret='{s['sk']}', endpoint='https://x')"

    log.info("loaded", extra={"cfg": SinkConfig(), "cfgs": [SinkConfig()]})
    try:
        raise PermissionError(f"denied for Authorization: Bearer {s['bearer']} with password={s['pw']}")
    except PermissionError:
        log.exception("send failed")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_is_ever_printed(fmt: str) -> None:
    buf = io.StringIO()
    scrubber = logs.Scrubber()
    scrubber.add_values([SECRETS["registered"], "abc"])  # too short values are ignored
    handler = logs.LogHandler(buf, rate_limit_s=0, journal=False)
    handler.setFormatter(logs.JsonFormatter(scrubber) if fmt == "json" else logs.TextFormatter(scrubber))
    log = logging.getLogger(f"kas.test.secrets.{fmt}")  # a logger name with "secret" in it is not a key
    log.propagate = False
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG)
    _emit_secret_records(log)
    out = buf.getvalue()
    for name, value in SECRETS.items():
        assert value not in out, f"{name} leaked:\n{out}"
        assert value.replace('"', '\\"') not in out
    for fragment in ("Sk3yS3cr3t", "hunter2", "eyJhbGci", "CAIS8wF1", "urlPassw0rd", "sessionid-7f"):
        assert fragment not in out
    assert "LTAI-id" not in out  # an AccessKey ID is masked too: with the STS token it identifies the credential
    # what is not secret is still there
    for context in (
        "request failed",
        "sls",
        "cn-hangzhou.log.aliyuncs.com",
        "loki.example:3100",
        "user",
        "admin",
        "send failed",
        "PermissionError",
        "endpoint",
    ):
        assert context in out, context
    assert out.count(logs.MASK) >= 15
    if fmt == "json":
        docs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert len(docs) == 13
        assert docs[1]["headers"]["Host"] == "cn-hangzhou.log.aliyuncs.com"
        assert docs[1]["headers"]["Authorization"] == logs.MASK
        assert docs[4]["enrich"] == {"redact": {"mode": "hash", "hash_key": logs.MASK}}
        assert docs[5]["token"] == logs.MASK and docs[5]["password"] == logs.MASK
        assert docs[7]["msg"].startswith('json body {"password": "***')


_token = st.text(string.ascii_letters + string.digits + "+/=_-.~", min_size=12, max_size=64)
_key = st.sampled_from(
    [
        "password",
        "db_password",
        "secret",
        "client_secret",
        "access_key_secret",
        "token",
        "auth_token",
        "hash_key",
        "api_key",
        "security-token",
        "Authorization",
        "X-Acs-Security-Token",
        "private_key",
    ]
)
_shape = st.sampled_from(["{k}={v}", "{k}: {v}", '"{k}": "{v}"', "'{k}': '{v}'", "{k} = {v}", "{k}={v}&next=1", "{k}: Bearer {v}", "{k}: acs AK:{v}"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=_key, value=_token, shape=_shape, fmt=st.sampled_from(["text", "json"]), where=st.sampled_from(["msg", "field", "nested", "exception"]))
def test_secret_values_never_appear_whatever_their_shape(key: str, value: str, shape: str, fmt: str, where: str) -> None:
    buf = io.StringIO()
    handler = logs.LogHandler(buf, rate_limit_s=0, journal=False)
    handler.setFormatter(logs.JsonFormatter() if fmt == "json" else logs.TextFormatter())
    log = logging.getLogger("kas.test.property")
    log.propagate = False
    log.handlers[:] = [handler]
    text = "before " + shape.format(k=key, v=value) + " after"
    if where == "msg":
        log.error(text)
    elif where == "field":
        log.error("with a field", extra={"detail": text, key.replace("-", "_"): value})
    elif where == "nested":
        log.error("nested", extra={"ctx": {"list": [{key: value}], "note": text}})
    else:
        try:
            raise RuntimeError(text)
        except RuntimeError:
            log.exception("failed")
    out = buf.getvalue()
    assert value not in out, out
    assert "before" in out or (where == "nested" and "nested" in out)


# -- journald ------------------------------------------------------------------------------------


def test_journald_priority_prefix_on_every_line() -> None:
    buf = io.StringIO()
    handler = logs.LogHandler(buf, rate_limit_s=0, journal=True)
    handler.setFormatter(logs.TextFormatter())
    log = logging.getLogger("kas.test.journal")
    log.propagate = False
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG)
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    try:
        raise ValueError("x")
    except ValueError:
        log.exception("with traceback")
    lines = buf.getvalue().splitlines()
    assert [line[:3] for line in lines[:5]] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    assert len(lines) > 6 and all(line.startswith("<3>") for line in lines[5:])  # a traceback keeps its priority


def test_journal_detected_from_journal_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "stream", "w") as f:
        st_ = os.fstat(f.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st_.st_dev}:{st_.st_ino}")
        assert logs.LogHandler(f).journal is True
        monkeypatch.setenv("JOURNAL_STREAM", f"{st_.st_dev}:{st_.st_ino + 1}")
        assert logs.LogHandler(f).journal is False
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert logs.LogHandler(f).journal is False
        monkeypatch.delenv("JOURNAL_STREAM")
        assert logs.LogHandler(f).journal is False
        assert logs.LogHandler(io.StringIO()).journal is False  # no file descriptor

"""Every registered sink type and alert target type against the declared sink interface (delivery/contract.py).

Each is built by its registry from a minimal valid config and a SinkContext whose HTTP client factory answers
without a network; then: the core methods are its own and the capabilities answer as declared; `encode` of a
batch of real audit events (and, for alert targets, of alert records) gives requests whose indices cover every
record exactly once; `classify` is pure over a spread of answers and transport errors (the same request and
answer give the same outcome, and neither the sink nor the request changes); `aclose(deadline)` closes it.
A type added to a registry without an entry in MINIMAL fails here."""

from __future__ import annotations

import asyncio
import errno
import inspect
import json
import ssl
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.core import Metric

from kube_audit_shipper.delivery.contract import Blocked, Delivered, Rejected, Reply, Request, Retry, Sink, Split
from kube_audit_shipper.sinks import alert_registry, registry
from kube_audit_shipper.sinks.http.client import CredentialsError, TlsSetupError
from kube_audit_shipper.sinks.http.throttle import LocalThrottle
from kube_audit_shipper.sinks.s3.staging import StagingFullError
from tests.support.corpus import corpus_lines
from tests.support.sink_context import ScriptedHttp, context
from tests.unit.sinks.alerts.alerts import mixed, records

OUTCOMES = (Delivered, Retry, Rejected, Blocked, Split)

#: the smallest valid config of every type (besides name and type); `{dir}` is a directory of the test's own
MINIMAL: dict[str, dict[str, Any]] = {
    "file": {"path": "{dir}/out"},
    "sls": {"endpoint": "http://127.0.0.1:9", "project": "k8s-log-c0123", "logstore": "audit-c0123", "access_key_id": "AKID", "access_key_secret": "SECRET"},
    "loki": {"url": "http://127.0.0.1:9"},
    "s3": {"bucket": "audit-archive"},
    "alertmanager": {"url": "http://127.0.0.1:9"},
    "dingtalk": {"access_token": "0f3c9a"},
    "slack": {"webhook_url": "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx"},
    "webhook": {"url": "http://127.0.0.1:9/hook"},
}

KINDS = [("sink", kind) for kind in registry.SINK_CONFIGS] + [("alert target", kind) for kind in alert_registry.ALERT_TARGET_CONFIGS]


def tls_error() -> BaseException:
    try:
        raise httpx.ConnectError("tls") from ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    except httpx.ConnectError as exc:
        return exc


def sls_error(status: int, code: str, **headers: str) -> Reply:
    return Reply(status, {"x-log-requestid": "REQ1", **headers}, json.dumps({"errorCode": code, "errorMessage": "m"}).encode())


#: answers and transport errors of every kind a sink meets: each backend's own error shapes among them
RESULTS: list[Callable[[], Reply | BaseException]] = [
    lambda: Reply(200, {}, b""),
    lambda: Reply(204, {}, b""),
    lambda: Reply(200, {"content-type": "application/json"}, b'{"errcode":0,"errmsg":"ok"}'),
    lambda: Reply(200, {"content-type": "application/json"}, b'{"errcode":130101,"errmsg":"send too fast"}'),
    lambda: Reply(200, {}, b"ok"),
    lambda: Reply(
        400, {}, b"entry for stream '{job=\"kube-audit\"}' has timestamp too old: 2020-01-01T00:00:00Z, oldest acceptable timestamp is: 2026-11-15T00:00:00Z"
    ),
    lambda: sls_error(400, "PostBodyInvalid"),
    lambda: sls_error(400, "PostBodyTooLarge"),
    lambda: sls_error(400, "RequestTimeExpired", date="Sun, 22 Nov 2099 00:00:00 GMT"),
    lambda: sls_error(401, "Unauthorized"),
    lambda: Reply(403, {}, b"invalid_token"),
    lambda: Reply(404, {}, b"no_service"),
    lambda: Reply(413, {}, b"request too large"),
    lambda: Reply(429, {"Retry-After": "3"}, b"slow down"),
    lambda: Reply(500, {}, b"boom"),
    lambda: Reply(503, {}, b"<html>unavailable</html>"),
    lambda: httpx.ConnectError("connection refused"),
    lambda: httpx.ReadTimeout("slow"),
    lambda: TimeoutError(),
    tls_error,
    lambda: TlsSetupError("cannot load the TLS files"),
    lambda: CredentialsError("cannot read bearer_token_file /x"),
    lambda: LocalThrottle(3.0, "at most 20 messages per 60 s"),
    lambda: StagingFullError("9 of 8 bytes staged"),
    lambda: OSError(errno.ENOSPC, "No space left on device"),
    lambda: PermissionError(errno.EACCES, "Permission denied"),
    lambda: RuntimeError("a bug"),
]


def build(kind: str, what: str, tmp_path: Path) -> tuple[Sink, ScriptedHttp]:
    extra = {k: v.replace("{dir}", str(tmp_path)) if isinstance(v, str) else v for k, v in MINIMAL[kind].items()}
    spec = {"name": f"conf-{kind}", "type": kind, **extra}
    http = ScriptedHttp(lambda sent: Reply(200, {}, b""))
    ctx = context(tmp_path / "state", node="cp-1", input_paths=["/var/log/kubernetes/audit/audit.log"], http=http)
    if what == "sink":
        sink = registry.build_sink(msgspec.convert(spec, registry.SINK_CONFIGS[kind]), ctx)
    else:
        sink = alert_registry.build_alert_target(msgspec.convert(spec, alert_registry.ALERT_TARGET_CONFIGS[kind]), ctx)
    return sink, http


def state_of(value: Any, seen: set[int] | None = None, depth: int = 0) -> Any:
    """Everything an object holds, as plain data to compare: its attributes (and theirs), numbers, text, bytes,
    containers, enums and times; locks, functions, C objects and the like are left out (they hold no answer)."""
    seen = set() if seen is None else seen
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, Enum):
        return value.value
    if depth > 8 or id(value) in seen or inspect.isroutine(value) or inspect.ismodule(value) or isinstance(value, type):
        return "..."
    seen.add(id(value))
    if isinstance(value, dict):
        return {repr(k): state_of(v, seen, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)) or type(value).__name__ == "deque":
        items = [state_of(v, seen, depth + 1) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, (range, Path)) or type(value).__module__ == "datetime":
        return repr(value)
    fields: dict[str, Any] = {}
    for name in getattr(type(value), "__slots__", ()):
        if hasattr(value, name):
            fields[name] = state_of(getattr(value, name), seen, depth + 1)
    for name, v in getattr(value, "__dict__", {}).items():
        fields[name] = state_of(v, seen, depth + 1)
    return (type(value).__qualname__, fields)


def covered_once(requests: list[Request], n: int) -> None:
    positions = [i for r in requests for i in r.indices]
    assert sorted(positions) == list(range(n)), "every record of the batch in exactly one request"
    assert all(isinstance(r.payload, bytes) for r in requests)


def test_every_registered_type_is_tested() -> None:
    assert set(registry.SINK_CONFIGS) | set(alert_registry.ALERT_TARGET_CONFIGS) == set(MINIMAL)


@pytest.mark.parametrize(("what", "kind"), KINDS, ids=[f"{w.replace(' ', '-')}:{k}" for w, k in KINDS])
def test_the_sink_interface(what: str, kind: str, tmp_path: Path) -> None:
    sink, http = build(kind, what, tmp_path)
    assert isinstance(sink, Sink) and sink.name == f"conf-{kind}"
    assert sink.max_concurrency is None or (isinstance(sink.max_concurrency, int) and sink.max_concurrency >= 1)
    for method in ("encode", "split", "send", "classify", "aclose"):
        assert getattr(type(sink), method) is not getattr(Sink, method), f"{type(sink).__name__} does not implement {method}"
    for method in ("send", "aclose", "run_background", "tick"):
        assert inspect.iscoroutinefunction(getattr(sink, method)), method
    assert "deadline" in inspect.signature(sink.aclose).parameters
    blocked = sink.blocked_for_s()
    assert isinstance(blocked, float) and blocked == 0.0
    families = list(sink.metric_families())
    assert all(isinstance(f, Metric) and f.name.startswith("kube_audit_shipper_") for f in families)

    events = list(corpus_lines()[:300])
    requests = sink.encode(events)
    covered_once(requests, len(events))
    if what == "alert target":
        alerts = records(mixed(40))
        covered_once(sink.encode(alerts), len(alerts))

    for request in requests[:3]:
        for make in RESULTS:
            result = make()
            before = (state_of(sink), state_of(request))
            outcome = sink.classify(request, result)
            assert isinstance(outcome, OUTCOMES), (result, outcome)
            assert sink.classify(request, result) == outcome, f"the same answer classified twice differently: {result!r}"
            assert (state_of(sink), state_of(request)) == before, f"classify changed the sink or the request on {result!r}"

    async def close() -> None:
        await sink.tick(time.monotonic())
        await sink.aclose(time.monotonic() + 5)

    asyncio.run(close())
    assert http.sent == []  # nothing of this went over the wire


def test_classify_purity_is_checked_for_real() -> None:
    """The check above would see a classify that counts, learns or writes into the request."""

    class Counting:
        def __init__(self) -> None:
            self.errors = 0

    counting, request = Counting(), Request(payload=b"x", indices=[0], meta={"a": 1})
    before = (state_of(counting), state_of(request))
    counting.errors += 1
    assert state_of(counting) != before[0]
    request.meta["split_code"] = "PostBodyTooLarge"
    assert state_of(request) != before[1]

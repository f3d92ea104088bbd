"""The test Loki answers every case of shared/reference/loki-and-s3-backends.md §3 as Loki v3.7.6 did.

Requests here are built with the protobuf library and plain JSON, not with the sink, so the server is checked on
its own: status codes, text/plain bodies (verbatim where the reference gives them), what is stored.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import cramjam
import httpx
import msgspec
import pytest

from tests.support.loki_server import LokiLimits, LokiServer, ManualClock
from tests.support.loki_wire import LabelError, go_quote, go_time, parse_labels, push_request_class

NOW = 1_795_338_895_882_227_707  # 2026-11-22T09:14:55.882227707Z
H = 3600 * 10**9
PushRequest = push_request_class()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def loki_server_options(clock: ManualClock) -> dict[str, Any]:
    return {"clock": clock}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def pb(streams: list[tuple[str, list[tuple[int, str]]]]) -> bytes:
    msg = PushRequest()
    for labels, entries in streams:
        s = msg.streams.add(labels=labels)
        for ts, line in entries:
            s.entries.add(line=line, timestamp={"seconds": ts // 10**9, "nanos": ts % 10**9})
    return bytes(cramjam.snappy.compress_raw(msg.SerializeToString()))


def js(streams: list[tuple[dict[str, str], list[tuple[int, str]]]]) -> bytes:
    return msgspec.json.encode({"streams": [{"stream": s, "values": [[str(ts), line] for ts, line in es]} for s, es in streams]})


def post(http: httpx.Client, loki_server: LokiServer, body: bytes, content_type: str | None = "application/x-protobuf", **headers: str) -> httpx.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return http.post(loki_server.url + "/loki/api/v1/push", content=body, headers=headers)


def text(r: httpx.Response) -> str:
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "retry-after" not in r.headers
    assert r.text.endswith("\n")
    return r.text[:-1]


def test_success_in_every_encoding(loki_server: LokiServer, http: httpx.Client) -> None:
    r1 = post(http, loki_server, pb([('{job="edge"}', [(NOW, "a")])]), **{"X-Scope-OrgID": "ignored-without-auth"})
    r2 = post(http, loki_server, js([({"job": "edge"}, [(NOW + 1, "b")])]), "application/json; charset=utf-8")
    r3 = post(http, loki_server, gzip.compress(js([({"job": "edge"}, [(NOW + 2, "c")])])), "application/json", **{"Content-Encoding": "gzip"})
    assert [r.status_code for r in (r1, r2, r3)] == [204, 204, 204] and r1.content == b""
    assert [e.line for e in loki_server.stored()['{job="edge", service_name="edge"}']] == ["a", "b", "c"]  # tenant "fake"


def test_out_of_order_within_an_hour_is_taken_older_is_too_far_behind(loki_server: LokiServer, http: httpx.Client) -> None:
    labels = '{case="ooo", job="edge", run="1"}'
    assert post(http, loki_server, pb([(labels, [(NOW, "new")])])).status_code == 204
    assert post(http, loki_server, pb([(labels, [(NOW - 5 * 60 * 10**9, "5 min back")])])).status_code == 204
    old = NOW - 2 * H
    r = post(http, loki_server, pb([(labels, [(old, "2 h back")])]))
    assert r.status_code == 400
    assert text(r) == (
        "entry with timestamp 2026-11-22 07:14:55.882227707 +0000 UTC ignored, reason: 'entry too far behind, entry timestamp is: "
        "2026-11-22T07:14:55Z, oldest acceptable timestamp is: 2026-11-22T08:14:55Z',\nuser 'fake', total ignored: 1 out of 1 for stream: "
        '{case="ooo", job="edge", run="1", service_name="edge"}'
    )
    assert [e.line for e in loki_server.stored()['{case="ooo", job="edge", run="1", service_name="edge"}']] == ["new", "5 min back"]


def test_exact_duplicate_is_dropped_silently(loki_server: LokiServer, http: httpx.Client) -> None:
    for _ in range(2):
        assert post(http, loki_server, pb([('{job="edge"}', [(NOW, "same")])])).status_code == 204
    assert len(loki_server.stored()['{job="edge", service_name="edge"}']) == 1


def test_too_old_and_too_new(loki_server: LokiServer, http: httpx.Client) -> None:
    r = post(http, loki_server, pb([('{job="edge"}', [(NOW - 8 * 24 * H, "old")])]))
    assert (r.status_code, text(r)) == (
        400,
        (
            'entry for stream \'{job="edge", service_name="edge"}\' has timestamp too old: '
            "2026-11-14T09:14:55Z, oldest acceptable timestamp is: 2026-11-15T09:14:55Z"
        ),
    )
    r = post(http, loki_server, pb([('{job="edge"}', [(NOW + H, "new")])]))
    assert (r.status_code, text(r)) == (400, 'entry for stream \'{job="edge", service_name="edge"}\' has timestamp too new: 2026-11-22T10:14:55Z')
    assert loki_server.stored() == {}


def test_line_over_max_line_size(loki_server: LokiServer, http: httpx.Client) -> None:
    r = post(http, loki_server, pb([('{job="edge"}', [(NOW, "x" * 262145)])]))
    assert (r.status_code, text(r)) == (
        400,
        ("max entry size '262144' bytes exceeded for stream '{job=\"edge\", service_name=\"edge\"}' while adding an entry with length '262145' bytes"),
    )
    assert post(http, loki_server, pb([('{job="edge"}', [(NOW, "x" * 262144)])])).status_code == 204


def test_label_limits(loki_server: LokiServer, http: httpx.Client) -> None:
    fifteen = ", ".join(f'l{i:02d}="v"' for i in range(15))
    assert post(http, loki_server, pb([("{" + fifteen + "}", [(NOW, "15 user labels + service_name")])])).status_code == 204
    r = post(http, loki_server, pb([("{" + fifteen + ', l15="v"}', [(NOW, "16")])]))
    assert r.status_code == 400 and text(r).endswith("has 16 label names; limit 15") and 'service_name="unknown_service"' in r.text
    r = post(http, loki_server, pb([('{job="edge", v="' + "v" * 2049 + '"}', [(NOW, "long value")])]))
    assert r.status_code == 400 and text(r).endswith(f"has label value too long: '{'v' * 2049}'")
    r = post(http, loki_server, pb([("{" + "n" * 1025 + '="v"}', [(NOW, "long name")])]))
    assert r.status_code == 400 and text(r).endswith(f"has label name too long: '{'n' * 1025}'")


def test_label_parse_errors_fail_the_whole_request(loki_server: LokiServer, http: httpx.Client) -> None:
    r = post(http, loki_server, js([({"bad-name": "x"}, [(NOW, "a")]), ({"job": "ok"}, [(NOW, "b")])]), "application/json")
    assert (r.status_code, text(r)) == (400, "couldn't parse labels: 1:5: parse error: unexpected character inside braces: '-'")
    r = post(http, loki_server, pb([("{job=edge", [(NOW, "a")])]))
    assert (r.status_code, text(r)) == (400, 'couldn\'t parse labels: 1:6: parse error: unexpected identifier "edge" in label set, expected string')
    assert loki_server.stored() == {}
    assert post(http, loki_server, pb([("{}", [(NOW, "no labels")])])).status_code == 204
    assert list(loki_server.stored()) == ['{service_name="unknown_service"}']


def test_unreadable_bodies(loki_server: LokiServer, http: httpx.Client) -> None:
    cases: list[tuple[bytes, str | None, dict[str, str], str]] = [
        (b'{"streams": [{"stream": {"job": "x"}, "values": [[', "application/json", {}, "loghttp.PushRequest.Streams"),
        (b'{"streams": [{"stream": {"job": "x"}, "values": [[1795341295882227707, "a"]]}]}', "application/json", {}, "unmarshalerDecoder"),
        (b"\x0a\x05not snappy at all", "application/x-protobuf", {}, "snappy: corrupt input"),
        (b"", "application/x-protobuf", {}, "EOF"),
        (pb([('{job="x"}', [(NOW, "a")])]), None, {}, "mime: no media type"),
        (pb([('{job="x"}', [(NOW, "a")])]), "application/x-protobuf", {"Content-Encoding": "br"}, 'Content-Encoding "br" not supported'),
    ]
    for body, ctype, headers, expected in cases:
        r = post(http, loki_server, body, ctype, **headers)
        assert r.status_code == 400 and expected in text(r), (expected, r.text)
    assert http.get(loki_server.url + "/loki/api/v1/push").status_code == 405
    assert loki_server.stored() == {}


def test_mixed_request_stores_the_valid_stream(loki_server: LokiServer, http: httpx.Client) -> None:
    r = post(http, loki_server, pb([('{job="ok"}', [(NOW, "valid")]), ('{job="old"}', [(NOW - 8 * 24 * H, "too old")])]))
    assert r.status_code == 400 and text(r).startswith('entry for stream \'{job="old", service_name="old"}\' has timestamp too old')
    assert [e.line for es in loki_server.stored().values() for e in es] == ["valid"]


def test_grouped_distributor_errors(loki_server: LokiServer, http: httpx.Client) -> None:
    old = NOW - 8 * 24 * H
    r = post(http, loki_server, pb([('{job="a"}', [(old, "1"), (old + 1, "2"), (NOW, "ok"), (NOW, "x" * 262145)])]))
    assert r.status_code == 400
    parts = text(r).split("; ")
    assert parts[0].startswith('2 errors like: entry for stream \'{job="a", service_name="a"}\' has timestamp too old')
    assert parts[1].startswith("1 errors like: max entry size '262144' bytes exceeded")
    assert [e.line for e in loki_server.stored()['{job="a", service_name="a"}']] == ["ok"]


def test_tenant_rate_limit_429_without_retry_after(clock: ManualClock) -> None:
    with LokiServer(clock=clock) as loki_server, httpx.Client(timeout=10) as http:
        pushes = [[(NOW + 10 * i + k, f"{i}-{k}" + "x" * 249_997) for k in range(8)] for i in range(8)]  # ~2 MB each
        statuses = [post(http, loki_server, pb([('{job="rate"}', p)])).status_code for p in pushes]
        assert statuses == [204, 204, 204, 429, 429, 429, 429, 429]  # the 6 MiB burst allows three
        r = post(http, loki_server, pb([('{job="rate"}', pushes[4])]))
        assert r.status_code == 429 and "retry-after" not in r.headers
        assert text(r) == (
            "ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting to ingest '8' lines "
            "totaling '2000000' bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased"
        )
        clock.advance(1)  # 4 MiB of tokens back
        assert post(http, loki_server, pb([('{job="rate"}', pushes[4])])).status_code == 204
        big = [(NOW + 100 + i, "y" * 250_000) for i in range(28)]  # one request over the 6 MiB burst: never
        for _ in range(3):
            clock.advance(10)
            assert post(http, loki_server, pb([('{job="rate"}', big)])).status_code == 429


def test_per_stream_rate_limit_rejects_the_whole_stream(clock: ManualClock) -> None:
    limits = LokiLimits(per_stream_rate_bytes=64 << 10, per_stream_burst_bytes=128 << 10)
    with LokiServer(limits, clock=clock) as loki_server, httpx.Client(timeout=10) as http:
        entries = [(NOW + i, "z" * 61441) for i in range(4)]
        assert post(http, loki_server, pb([('{job="s"}', entries[:2])])).status_code == 204
        r = post(http, loki_server, pb([('{job="other"}', [(NOW, "fine")]), ('{job="s"}', [(NOW + 10 + i, "w" * 61441) for i in range(4)])]))
        assert r.status_code == 429
        body = text(r)
        assert (
            body.count(
                "ignored, reason: 'Per stream rate limit exceeded (limit: 64KB/sec) while attempting to ingest for stream "
                '\'{job="s", service_name="s"}\' totaling 61441B, consider splitting'
            )
            == 4
        )
        assert body.endswith('user \'fake\', total ignored: 4 out of 4 for stream: {job="s", service_name="s"}')
        assert [e.line for e in loki_server.stored()['{job="other", service_name="other"}']] == ["fine"]  # stored all the same


def test_only_the_last_streams_ingester_error_is_returned(loki_server: LokiServer, http: httpx.Client) -> None:
    for job in ("a", "b"):
        assert post(http, loki_server, pb([(f'{{job="{job}"}}', [(NOW, "new")])])).status_code == 204
    both_behind = [('{job="a"}', [(NOW - 2 * H, "a old")]), ('{job="b"}', [(NOW - 2 * H, "b old")])]
    r = post(http, loki_server, pb(both_behind))
    assert r.status_code == 400 and text(r).endswith('for stream: {job="b", service_name="b"}') and 'job="a"' not in r.text
    r = post(http, loki_server, pb([both_behind[0], ('{job="b"}', [(NOW + 1, "b fine")])]))
    assert r.status_code == 204  # Loki loses stream a's error: the last stream was fine


def test_message_over_4_mib_is_500(loki_server: LokiServer, http: httpx.Client) -> None:
    entries = [(NOW + i, f"{i:06d}" + "m" * 200_000) for i in range(25)]
    r = post(http, loki_server, pb([('{job="big"}', entries)]))
    assert r.status_code == 500
    assert text(r).startswith("rpc error: code = ResourceExhausted desc = grpc: received message larger than max (")
    assert text(r).endswith(" vs. 4194304)") and loki_server.stored() == {}


def test_structured_metadata_comes_back(loki_server: LokiServer, http: httpx.Client) -> None:
    body = msgspec.json.encode({"streams": [{"stream": {"job": "sm"}, "values": [[str(NOW), "line", {"auditID": "a-1"}]]}]})
    assert post(http, loki_server, body, "application/json").status_code == 204
    assert loki_server.stored()['{job="sm", service_name="sm"}'][0].metadata == (("auditID", "a-1"),)


def test_auth_enabled_needs_a_tenant(clock: ManualClock) -> None:
    with LokiServer(clock=clock, auth_enabled=True) as loki_server, httpx.Client(timeout=10) as http:
        r = post(http, loki_server, pb([('{job="t"}', [(NOW, "a")])]))
        assert (r.status_code, text(r)) == (401, "no org id")
        assert post(http, loki_server, pb([('{job="t"}', [(NOW, "a")])]), **{"X-Scope-OrgID": "team-a"}).status_code == 204
        assert loki_server.stored("team-a") and not loki_server.stored("fake")


def test_go_formats() -> None:
    assert go_time(NOW) == "2026-11-22 09:14:55.882227707 +0000 UTC"
    assert go_time(NOW - NOW % 10**9 + 500_000_000) == "2026-11-22 09:14:55.5 +0000 UTC"
    assert go_quote('a"b\\c\n\x01é\u00a0') == '"a\\"b\\\\c\\n\\x01é\\u00a0"'
    assert parse_labels('{a="x\\"y", b="\\u00e9"}') == [("a", 'x"y'), ("b", "é")]
    for bad in ('{a="x"', 'a="x"}', '{a="x" b="y"}', "{a=`x`}"):
        with pytest.raises(LabelError):
            parse_labels(bad)


def test_scripted_faults_come_first(loki_server: LokiServer, http: httpx.Client) -> None:
    loki_server.inject(503, "upstream connect error", {"Retry-After": "7"})
    r = post(http, loki_server, pb([('{job="f"}', [(NOW, "a")])]))
    assert (r.status_code, r.headers["retry-after"]) == (503, "7") and loki_server.stored() == {}
    assert post(http, loki_server, pb([('{job="f"}', [(NOW, "a")])])).status_code == 204
    assert loki_server.statuses() == [503, 204] and loki_server.pushes[0].injected

"""The test SLS server itself: the official SDK's own client is accepted by it (so the server is not merely
agreeing with our sink), and it refuses what the real service refuses: a bad signature, a body that does not
match Content-MD5 or x-log-bodyrawsize, a stale Date, an unknown key, a wrong STS token, oversize groups."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest
from aliyun.log import IndexConfig, LogClient, LogException, LogItem, PutLogsRequest

from kube_audit_shipper.sinks.sls.config import SlsSinkConfig
from kube_audit_shipper.sinks.sls.index import audit_index
from kube_audit_shipper.sinks.sls.sink import SlsSink
from tests.support.corpus import numbered_lines
from tests.support.sink_context import context
from tests.support.sls_server import SlsTestServer

PROJECT, LOGSTORE = "k8s-log-c0123", "audit-c0123"


@pytest.fixture
def sls_server_options() -> dict[str, Any]:
    return {"keys": {"AKID": ("SECRET", ""), "STS.x": ("sts-secret", "sts-token")}}


def sdk(sls_server: SlsTestServer, key: str = "AKID", secret: str = "SECRET", token: str | None = None, **kw: Any) -> LogClient:
    client = LogClient(f"127.0.0.1:{sls_server.port}", key, secret, securityToken=token, **kw)
    client._isRowIp = True  # the SDK recognises a bare IP endpoint, not IP:port; it then sends Host: <project>.<ip:port>
    return client


def test_the_sdk_client_is_accepted_for_putlogs_and_the_logstore_api(sls_server: SlsTestServer) -> None:
    for client in (sdk(sls_server), sdk(sls_server, "STS.x", "sts-secret", "sts-token"), sdk(sls_server, auth_version="v4", region="cn-hangzhou")):
        items = []
        for i in range(3):
            item = LogItem(timestamp=1_700_000_000 + i)
            item.set_contents([("verb", "get"), ("i", str(i))])
            items.append(item)
        client.put_logs(PutLogsRequest(PROJECT, LOGSTORE, "topic", "10.0.0.1", items, logtags=[("cluster", "c0123")]))
    rows = sls_server.logs(LOGSTORE)
    assert len(rows) == 9 and rows[0]["verb"] == "get" and rows[0]["__tag__:cluster"] == "c0123" and rows[0]["__topic__"] == "topic"
    assert {g["compress"] for g in sls_server.groups(LOGSTORE)} == {"lz4"}

    client = sdk(sls_server)
    client.create_logstore(PROJECT, "audit-new", ttl=30, shard_count=2)
    assert client.get_logstore(PROJECT, "audit-new").get_ttl() == 30
    index = IndexConfig()
    index.from_json(audit_index())
    client.create_index(PROJECT, "audit-new", index)
    got = client.get_index_config(PROJECT, "audit-new").get_index_config()
    assert set(got.key_config_list) == set(audit_index()["keys"])
    assert got.key_config_list["responseStatus"].json_key_config.json_keys["code"]["type"] == "long"


@pytest.mark.parametrize(
    ("client_kw", "code"),
    [
        ({"secret": "WRONG"}, "SignatureNotMatch"),
        ({"key": "UNKNOWN"}, "InvalidAccessKeyId"),
        ({"key": "STS.x", "secret": "sts-secret", "token": "stale"}, "Unauthorized"),
        ({"key": "STS.x", "secret": "sts-secret"}, "Unauthorized"),
    ],
)
def test_bad_credentials_are_refused(sls_server: SlsTestServer, client_kw: dict[str, Any], code: str) -> None:
    with pytest.raises(LogException) as err:
        sdk(sls_server, **client_kw).get_logstore(PROJECT, LOGSTORE)
    assert err.value.get_error_code() == code


def test_a_skewed_clock_is_refused_with_the_server_date(sls_server: SlsTestServer) -> None:
    sls_server.clock_offset_s = 3600
    with pytest.raises(LogException) as err:
        sdk(sls_server).get_logstore(PROJECT, LOGSTORE)
    assert err.value.get_error_code() == "RequestTimeExpired"


def _sink(sls_server: SlsTestServer) -> SlsSink:
    cfg = msgspec.convert(
        {
            "name": "s",
            "type": "sls",
            "endpoint": sls_server.url,
            "project": PROJECT,
            "logstore": LOGSTORE,
            "access_key_id": "AKID",
            "access_key_secret": "SECRET",
        },
        SlsSinkConfig,
    )
    return SlsSink(cfg, context("/var/lib/kas", node="n"))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda r: setattr(r, "payload", r.payload[:-1] + bytes([r.payload[-1] ^ 1])), "SignatureNotMatch"),  # the body is signed through its MD5
        (lambda r: r.headers.update({"x-log-bodyrawsize": str(r.raw_bytes + 1)}), "ParameterInvalid"),
        (lambda r: r.headers.update({"x-log-compresstype": "zstd"}), "PostBodyUncompressError"),
        (lambda r: r.headers.update({"x-log-compresstype": "snappy"}), "InvalidCompressType"),
    ],
)
async def test_tampered_requests_are_refused(sls_server: SlsTestServer, tamper: Any, code: str) -> None:
    sink = _sink(sls_server)
    (req,) = sink.encode(numbered_lines(3))
    tamper(req)
    reply = await sink.send(req)
    await sink.aclose()
    assert json.loads(reply.body)["errorCode"] == code
    assert sls_server.logs(LOGSTORE) == []


@pytest.mark.asyncio
async def test_a_signed_header_changed_after_signing_is_refused(sls_server: SlsTestServer) -> None:
    sink = _sink(sls_server)
    (req,) = sink.encode(numbered_lines(2))
    orig = sink.client.sign

    def sign_then_tamper(*a: Any, **kw: Any) -> None:
        orig(*a, **kw)
        a[3]["x-log-topic-hint"] = "added after signing"

    sink.client.sign = sign_then_tamper  # type: ignore[method-assign]
    reply = await sink.send(req)
    await sink.aclose()
    assert json.loads(reply.body)["errorCode"] == "SignatureNotMatch"


@pytest.mark.asyncio
async def test_oversize_groups_and_values_are_refused(sls_server: SlsTestServer) -> None:
    sls_server.max_logs = 10
    sink = _sink(sls_server)
    (req,) = sink.encode(numbered_lines(11))
    assert json.loads((await sink.send(req)).body)["errorCode"] == "PostBodyTooLarge"
    sls_server.max_logs, sls_server.max_value_bytes = 4096, 64
    (req,) = sink.encode(numbered_lines(1))
    assert "value of key" in json.loads((await sink.send(req)).body)["errorMessage"]
    await sink.aclose()
    await asyncio.sleep(0)

"""dingtalk/encode.py and sign.py: markdown digests within DingTalk's limits, mentions, escaping, and the signed URL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

from kube_audit_shipper.sinks.alerts import format as alert_format
from kube_audit_shipper.sinks.dingtalk.config import DingTalkTargetConfig
from kube_audit_shipper.sinks.dingtalk.encode import DigestEncoder, escape
from kube_audit_shipper.sinks.dingtalk.sign import send_url, signature
from tests.support.dingtalk_server import check_message, expected_sign
from tests.unit.sinks.alerts.alerts import exec_alert, mixed, public_failures_alert, records, secret_alert


def encoder(**kw: Any) -> DigestEncoder:
    return DigestEncoder(msgspec.convert({"name": "ding", "access_token": "tok", **kw}, DingTalkTargetConfig), node="cp-1")


def body(request: Any) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.json.decode(request.payload)
    return result


def ids_in(text: str) -> list[str]:
    return [escape_back(m) for m in re.findall(r"· id (\S+)", text)]


def escape_back(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def test_a_batch_of_100_alerts_becomes_digests_within_the_limits() -> None:
    alerts = mixed(100)
    enc = encoder()
    requests = enc.encode(records(alerts))
    cfg = enc.cfg
    assert len(requests) == 5  # 100 alerts, 20 a digest
    seen: list[str] = []
    for request in requests:
        msg = body(request)
        assert check_message(msg) is None  # DingTalk's own schema (the strict test server's check)
        assert len(request.payload) <= cfg.max_message_bytes <= 20000
        text = msg["markdown"]["text"]
        ids = ids_in(text)
        assert len(ids) == len(request.meta["items"]) <= cfg.max_alerts_per_message
        assert text.startswith(f"#### kube-audit: {len(ids)} alerts (")
        assert msg["markdown"]["title"].startswith("kube-audit: ")
        seen += ids
    assert sorted(seen) == sorted(a.id for a in alerts)  # every alert once, none lost
    assert sorted(i for r in requests for i in r.indices) == list(range(100))
    # the most severe first, across digests
    ranks = [alert_format.severity_rank(next(a.severity for a in alerts if a.id == i)) for i in seen]
    assert ranks == sorted(ranks)


def test_a_small_byte_budget_makes_more_digests_never_bigger_ones() -> None:
    alerts = mixed(60)
    requests = encoder(max_message_bytes=4096, max_alerts_per_message=100).encode(records(alerts))
    assert len(requests) > 3
    assert all(len(r.payload) <= 4096 for r in requests)
    assert sorted(i for r in requests for i in ids_in(body(r)["markdown"]["text"])) == sorted(a.id for a in alerts)


def test_an_alert_over_the_budget_is_cut_not_dropped() -> None:
    huge = exec_alert(1, summary="x" * 30000, fields={f"f{k}": "y" * 300 for k in range(40)})
    (request,) = encoder(max_message_bytes=4096).encode(records([huge]))
    assert len(request.payload) <= 4096 and request.indices == [0]
    assert "…" in body(request)["markdown"]["text"]


def test_alert_block_shows_what_an_oncall_needs() -> None:
    alert = exec_alert(2)
    (request,) = encoder().encode(records([alert]))
    text = body(request)["markdown"]["text"]
    assert "**HIGH · exec-into-container** · 2026-11-22T10:00:02.123456Z" in text
    assert "- **command**: cat /etc/shadow" in text
    assert "- **user**: kubernetes-admin" in text
    assert "node cp-1 · cluster prod-hz · id exec-into-container:" in text
    assert "audit 5f1c0002-" in text and "tags: mitre:T1609, mitre:execution" in text
    assert body(request)["markdown"]["title"] == "kube-audit: exec-into-container"


def test_markdown_in_values_is_escaped() -> None:
    alert = exec_alert(4)  # user "dev_ops*team"
    text = body(encoder().encode(records([alert]))[0])["markdown"]["text"]
    assert "dev\\_ops\\*team" in text and "dev_ops*team" not in text
    assert escape("[x](http://e) `c` #h <b>") == "\\[x\\](http://e) \\`c\\` \\#h \\<b\\>"


def test_mentions_only_on_serious_digests() -> None:
    enc = encoder(at_mobiles=["13800000000"], at_user_ids=["u1"], mention_min_severity="high")
    low = body(enc.encode(records([secret_alert(1)]))[0])
    assert "at" not in low and "@13800000000" not in low["markdown"]["text"]
    high = body(enc.encode(records([secret_alert(1), exec_alert(2)]))[0])
    assert high["at"] == {"atMobiles": ["13800000000"], "atUserIds": ["u1"], "isAtAll": False}
    assert high["markdown"]["text"].endswith("\n@13800000000")
    assert check_message(high) is None


def test_duplicates_of_one_detection_are_one_entry_and_split_halves_a_digest() -> None:
    a = public_failures_alert(1)
    enc = encoder()
    (request,) = enc.encode(records([a, exec_alert(1), a]))
    assert len(request.meta["items"]) == 2 and sorted(request.indices) == [0, 1, 2]
    parts = enc.split(request, [])
    assert [len(p.meta["items"]) for p in parts] == [1, 1]
    assert sorted(i for p in parts for i in p.indices) == [0, 1, 2]
    assert enc.split(parts[0], []) == []


def test_the_signature_is_dingtalks() -> None:
    secret, ts = "SEC0123456789abcdef", 1795341600123
    mac = hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
    assert signature(secret, ts) == base64.b64encode(mac).decode() == expected_sign(secret, str(ts))
    url = send_url("https://oapi.dingtalk.com/robot/send", "tok+/=", secret, ts)
    parts = urlsplit(url)
    assert parts.path == "/robot/send"
    query = parse_qs(parts.query)  # as the server reads it: URL-decoded once
    assert query == {"access_token": ["tok+/="], "timestamp": [str(ts)], "sign": [signature(secret, ts)]}
    assert "+" not in parts.query and "/" not in parts.query  # a raw + would be read back as a space
    assert send_url("https://x/robot/send", "tok", None, ts) == "https://x/robot/send?access_token=tok"


@pytest.mark.parametrize("n", [1, 19, 20, 21, 41])
def test_digest_count_is_the_ceiling(n: int) -> None:
    assert len(encoder().encode(records(mixed(n)))) == -(-n // 20)

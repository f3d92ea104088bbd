"""slack/encode.py: Block Kit digests within Slack's limits (checked by the strict test server's rules), escaping, mentions."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from kube_audit_shipper.sinks.slack.config import SlackTargetConfig
from kube_audit_shipper.sinks.slack.encode import BlocksEncoder, escape
from tests.support.slack_server import check_blocks
from tests.unit.sinks.alerts.alerts import exec_alert, mixed, public_failures_alert, records, secret_alert

URL = "https://hooks.slack.com/services/T0/B0/x"


def encoder(**kw: Any) -> BlocksEncoder:
    return BlocksEncoder(msgspec.convert({"name": "slack", "webhook_url": URL, **kw}, SlackTargetConfig), node="cp-1")


def message(request: Any) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.json.decode(request.payload)
    return result


def ids_of(msg: dict[str, Any]) -> list[str]:
    out = []
    for block in msg["blocks"]:
        if block["type"] == "context":
            for e in block["elements"]:
                m = re.fullmatch(r"id (.+)", e["text"])
                if m:
                    out.append(m[1].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    return out


def test_a_batch_becomes_messages_within_block_kits_limits() -> None:
    alerts = mixed(100)
    requests = encoder().encode(records(alerts))
    assert len(requests) == 7  # 16 alerts a message: 50 blocks
    seen = []
    for r in requests:
        msg = message(r)
        assert check_blocks(msg["blocks"]) is None
        assert len(msg["blocks"]) <= 50 and len(msg["text"]) <= 3000
        assert msg["blocks"][0]["type"] == "header"
        seen += ids_of(msg)
    assert sorted(seen) == sorted(a.id for a in alerts)
    assert sorted(i for r in requests for i in r.indices) == list(range(100))


def test_one_alert_reads_well() -> None:
    alert = exec_alert(2)
    msg = message(encoder().encode(records([alert]))[0])
    header, section, context = msg["blocks"]
    assert header["text"]["text"] == "kube-audit: 1 alert (1 high)"
    assert section["text"]["text"].startswith(":red_circle: *HIGH* · *exec-into-container*\n")
    fields = {f["text"].split("\n", 1)[0]: f["text"].split("\n", 1)[1] for f in section["fields"]}
    assert fields["*command*"] == "cat /etc/shadow" and fields["*namespace*"] == "kube-system"
    texts = [e["text"] for e in context["elements"]]
    assert texts[:3] == ["2026-11-22T10:00:02.123456Z", "node cp-1", "cluster prod-hz"]
    assert msg["text"] == "kube-audit: 1 alert (1 high): exec-into-container"


def test_at_most_ten_fields_the_last_says_what_did_not_fit() -> None:
    alert = exec_alert(1, fields={f"f{k}": f"v{k}" for k in range(14)})
    section = message(encoder().encode(records([alert]))[0])["blocks"][1]
    assert len(section["fields"]) == 10
    assert section["fields"][-1]["text"].startswith("*more*\nf9: v9; f10: v10")
    assert check_blocks(message(encoder().encode(records([alert]))[0])["blocks"]) is None


def test_values_cannot_mention_or_link() -> None:
    alert = secret_alert(1, summary="<!channel> see <https://evil.example|here> & more", fields={"user": "<@U123>"})
    msg = message(encoder().encode(records([alert]))[0])
    raw = msgspec.json.encode(msg).decode()
    assert "<!channel>" not in raw and "<@U123>" not in raw and "<https://" not in raw
    assert "&lt;!channel&gt; see &lt;https://evil.example|here&gt; &amp; more" in msg["blocks"][1]["text"]["text"]
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"


def test_the_configured_mention_only_on_serious_digests() -> None:
    enc = encoder(mention="<!here>", mention_min_severity="critical")
    quiet = message(enc.encode(records([exec_alert(1)]))[0])
    assert "<!here>" not in msgspec.json.encode(quiet).decode()
    loud = message(enc.encode(records([exec_alert(1), public_failures_alert(2)]))[0])
    assert loud["blocks"][1] == {"type": "section", "text": {"type": "mrkdwn", "text": "<!here>"}}
    assert loud["text"].startswith("<!here> ")
    assert check_blocks(loud["blocks"]) is None and len(loud["blocks"]) == 1 + 1 + 2 * 3 - 1


def test_long_texts_are_cut_to_slacks_limits() -> None:
    alert = exec_alert(1, summary="s" * 5000, rule="r" * 200, fields={"big": "b" * 5000})
    msg = message(encoder(title="t" * 100).encode(records([alert]))[0])
    assert check_blocks(msg["blocks"]) is None
    assert len(msg["blocks"][0]["text"]["text"]) <= 150 and len(msg["blocks"][1]["text"]["text"]) <= 3000


def test_split_halves_a_digest() -> None:
    enc = encoder()
    (request,) = enc.encode(records(mixed(6)))
    parts = enc.split(request, [])
    assert [len(p.meta["items"]) for p in parts] == [3, 3]
    assert all(check_blocks(message(p)["blocks"]) is None for p in parts)

"""dingtalk/replies.py on DingTalk's answers (errcode/errmsg bodies as oapi.dingtalk.com gives them) and local throttling."""

from __future__ import annotations

import httpx
import pytest

from kube_audit_shipper.delivery.contract import Blocked, Delivered, Rejected, Reply, Retry, Split
from kube_audit_shipper.sinks.dingtalk import replies
from kube_audit_shipper.sinks.dingtalk.config import DingTalkTargetConfig
from kube_audit_shipper.sinks.dingtalk.encode import DigestEncoder
from kube_audit_shipper.sinks.dingtalk.sink import DingTalkSink
from kube_audit_shipper.sinks.http.throttle import LocalThrottle
from tests.support.sink_context import context
from tests.unit.sinks.alerts.alerts import exec_alert, records

ENC = DigestEncoder(DingTalkTargetConfig(name="d", access_token="t"), node="cp-1")
ONE = ENC.encode(records([exec_alert(1)]))[0]
MANY = ENC.encode(records([exec_alert(1), exec_alert(2), exec_alert(3)]))[0]
JSON = {"Content-Type": "application/json;charset=utf-8"}
MORE = ", more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"


def ding(errcode: int, errmsg: str) -> Reply:
    return Reply(200, JSON, ('{"errcode":%d,"errmsg":"%s"}' % (errcode, errmsg)).encode())


def classify(result: Reply | BaseException, request: object = ONE) -> object:
    return replies.classify(request, result, throttle_pause_s=600.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer", "want", "start"),
    [
        (ding(0, "ok"), Delivered, None),
        (ding(130101, "send too fast, exceed 20 times per minute"), Retry, "throttled: errcode 130101"),
        (ding(410100, "发送速度太快而限流"), Retry, "throttled: errcode 410100"),
        (ding(-1, "系统繁忙"), Retry, "busy: errcode -1"),
        (ding(310000, "keywords not in content" + MORE), Blocked, "security_check: errcode 310000: keywords not in content"),
        (ding(310000, "sign not match" + MORE), Blocked, "security_check: errcode 310000: sign not match"),
        (ding(310000, "invalid timestamp" + MORE), Blocked, "security_check: errcode 310000: invalid timestamp"),
        (ding(310000, "ip 203.0.113.9 not in whitelist" + MORE), Blocked, "security_check:"),
        (ding(300001, "token is not exist"), Blocked, "robot_unavailable: errcode 300001"),
        (ding(300005, "token is not exist"), Blocked, "robot_unavailable: errcode 300005"),
        (ding(400102, "机器人已停用"), Blocked, "robot_unavailable:"),
        (ding(400013, "群已被解散"), Blocked, "robot_unavailable:"),
        (ding(40035, "缺少参数 access_token"), Blocked, "request_refused: errcode 40035"),
        (ding(43004, "无效的HTTP HEADER Content-Type"), Blocked, "request_refused:"),
        (ding(43002, "需要POST请求"), Blocked, "request_refused:"),
        (ding(400105, "不支持的消息类型"), Blocked, "request_refused:"),
        (ding(460101, "message too long, exceed 20000 bytes"), Split, "message_too_long:"),
        (ding(430101, "消息包含敏感词"), Rejected, "refused: errcode 430101: 消息包含敏感词"),
        (Reply(200, {"Content-Type": "text/html"}, b"<html>captive portal</html>"), Blocked, "unexpected_answer:"),
        (Reply(502, {}, b"bad gateway"), Retry, "unavailable: HTTP 502"),
        (Reply(429, {"Retry-After": "3"}, b""), Retry, "unavailable: HTTP 429"),
        (Reply(404, {}, b"not found"), Blocked, "http_404:"),
        (httpx.ConnectError("[Errno 111] Connection refused"), Retry, "connect_error:"),
        (LocalThrottle(12.5, "at most 20 messages per 60 s: next one in 12.5 s"), Retry, "local_rate_limit: at most 20 messages"),
    ],
)
def test_answers(answer: Reply | BaseException, want: type, start: str | None) -> None:
    outcome = classify(answer)
    assert isinstance(outcome, want)
    if start is not None:
        assert outcome.reason.startswith(start), outcome.reason  # type: ignore[attr-defined]


def test_throttling_waits_the_pause_and_local_throttling_its_own_wait() -> None:
    assert classify(ding(130101, "send too fast, exceed 20 times per minute")).after_s == 600.0  # type: ignore[attr-defined]
    assert classify(LocalThrottle(12.5, "x")).after_s == 12.5  # type: ignore[attr-defined]
    assert classify(Reply(503, {"Retry-After": "4"}, b"")).after_s == 4.0  # type: ignore[attr-defined]


def test_a_refused_digest_of_several_is_split_to_find_the_refused_alert() -> None:
    assert isinstance(classify(ding(430101, "消息包含敏感词"), MANY), Split)
    rejected = classify(ding(430101, "消息包含敏感词"), ONE)
    assert isinstance(rejected, Rejected) and list(rejected.indices) == [0]


def test_hints_name_the_setting_to_fix() -> None:
    assert "`title`" in classify(ding(310000, "keywords not in content")).reason  # type: ignore[attr-defined]
    assert "`secret`" in classify(ding(310000, "sign not match")).reason  # type: ignore[attr-defined]
    assert "clock" in classify(ding(310000, "invalid timestamp")).reason  # type: ignore[attr-defined]
    assert "allow-list" in classify(ding(310000, "ip 1.2.3.4 not in whitelist")).reason  # type: ignore[attr-defined]


def test_errcode_reads_only_dingtalk_answers() -> None:
    assert replies.errcode(b'{"errcode":0,"errmsg":"ok"}') == (0, "ok")
    assert replies.errcode(b'{"errcode":true}') is None
    assert replies.errcode(b'{"code":0}') is None
    assert replies.errcode(b"[]") is None and replies.errcode(b"<html>") is None


def test_a_transport_error_quoting_the_token_is_masked() -> None:
    sink = DingTalkSink(DingTalkTargetConfig(name="d", access_token="tok-0f3c9a7e", secret="SEC-abcdef"), context("/var/lib/kas"))
    error = httpx.ConnectError("cannot reach https://oapi.dingtalk.com/robot/send?access_token=tok-0f3c9a7e&sign=x (SEC-abcdef)")
    outcome = sink.classify(ONE, error)
    assert isinstance(outcome, Retry) and "tok-0f3c9a7e" not in outcome.reason and "SEC-abcdef" not in outcome.reason

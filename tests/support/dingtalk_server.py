"""A DingTalk custom-robot endpoint for tests, checking as strictly as oapi.dingtalk.com/robot/send does.

Answers are DingTalk's: HTTP 200 with `{"errcode": N, "errmsg": "..."}` for success and failure alike
(errcodes and messages from DingTalk's robot documentation and observed answers), in DingTalk's order:

* not POST: 43002 需要POST请求; no or empty access_token: 40035 缺少参数 access_token;
  an unknown access_token: 300005 token is not exist;
* a robot with a signing secret: `timestamp` (milliseconds) missing, not a number, or more than an hour
  from the server's clock: 310000 invalid timestamp; `sign` missing or not
  base64(HMAC-SHA256(secret, "<timestamp>\\n<secret>")) after the query is URL-decoded once: 310000 sign not match;
* throttled (see below): 130101 send too fast, exceed 20 times per minute;
* Content-Type not application/json: 43004 无效的HTTP HEADER Content-Type;
* a body over 20000 bytes: 460101 message too long, exceed 20000 bytes;
* not JSON: 40035 缺少参数 json; a msgtype other than text/markdown/link/actionCard/feedCard: 400105
  不支持的消息类型; text without a non-empty string `content`, markdown without non-empty strings `title`
  and `text`, unknown keys in them or in `at`, `at` lists that are not lists of strings, `isAtAll` not a
  boolean: 40035 缺少参数 <what>;
* a robot with keywords: a message whose content (text; markdown title and text) holds none:
  310000 keywords not in content;
* `refuse_words`: a message holding such a word gets that word's (errcode, errmsg) (content moderation);
* else stored: 0 ok.

Rate: a robot takes `limit_per_minute` (20) messages in any 60 s; the next one gets 130101 and the robot is
throttled for `throttle_s` (600 s, as DingTalk does) — every message meanwhile gets 130101 too. The clock is
injectable (`clock`: seconds), so tests step through minutes without waiting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.webhook_server import Answer, Hit, ScriptedServer

JSON = {"Content-Type": "application/json;charset=utf-8"}
MSGTYPES = ("text", "markdown", "link", "actionCard", "feedCard")
AT_KEYS = {"atMobiles", "atUserIds", "isAtAll"}


def answer(errcode: int, errmsg: str) -> Answer:
    return 200, JSON, json.dumps({"errcode": errcode, "errmsg": errmsg}, ensure_ascii=False).encode()


def expected_sign(secret: str, timestamp: str) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


@dataclass
class Robot:
    access_token: str
    secret: str | None = None
    keywords: tuple[str, ...] = ()
    accepted: deque[float] = field(default_factory=deque)  # when messages were taken (the rate window)
    throttled_until: float = 0.0
    messages: list[dict[str, Any]] = field(default_factory=list)


class DingTalkServer(ScriptedServer):
    """`with DingTalkServer(robots={"tok": "SECret"}) as ding:` the robot endpoint at `ding.url` (`/robot/send`)."""

    name = "dingtalk-server"

    def __init__(
        self,
        *,
        robots: dict[str, str | None] | None = None,
        keywords: dict[str, tuple[str, ...]] | None = None,
        clock: Callable[[], float] = time.time,
        limit_per_minute: int = 20,
        throttle_s: float = 600.0,
        max_body_bytes: int = 20000,
        timestamp_window_s: float = 3600.0,
        refuse_words: dict[str, tuple[int, str]] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        robots = {"token-1": "SEC-test-secret"} if robots is None else robots
        self.robots = {t: Robot(t, s, (keywords or {}).get(t, ())) for t, s in robots.items()}
        self.clock = clock
        self.limit_per_minute, self.throttle_s = limit_per_minute, throttle_s
        self.max_body_bytes, self.timestamp_window_s = max_body_bytes, timestamp_window_s
        self.refuse_words = refuse_words or {}
        self.throttle_answers = 0  # 130101 answers given (a client that keeps to the limit never sees one)

    @property
    def url(self) -> str:
        return self.base_url + "/robot/send"

    def messages(self, token: str = "token-1") -> list[dict[str, Any]]:
        with self.lock:
            return list(self.robots[token].messages)

    def accepted_times(self, token: str = "token-1") -> list[float]:
        """When each stored message was taken (server clock)."""
        with self.lock:
            return [m["_at"] for m in self.robots[token].messages]

    def handle(self, hit: Hit) -> Answer:
        parts = urlsplit(hit.path)
        if parts.path != "/robot/send":
            return 404, {"Content-Type": "text/html"}, b"<html><body>404 Not Found</body></html>"
        if hit.method != "POST":
            return answer(43002, "需要POST请求")
        query = parse_qs(parts.query, keep_blank_values=True)
        token = (query.get("access_token") or [""])[0]
        if not token:
            return answer(40035, "缺少参数 access_token")
        robot = self.robots.get(token)
        if robot is None:
            return answer(300005, "token is not exist")
        now = self.clock()
        if robot.secret is not None:
            stamp = (query.get("timestamp") or [""])[0]
            if not stamp.isdigit() or abs(now * 1000 - int(stamp)) > self.timestamp_window_s * 1000:
                return answer(310000, "invalid timestamp, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]")
            sign = (query.get("sign") or [""])[0]
            if not hmac.compare_digest(sign, expected_sign(robot.secret, stamp)):
                return answer(310000, "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]")
        while robot.accepted and now - robot.accepted[0] >= 60:
            robot.accepted.popleft()
        if now < robot.throttled_until or len(robot.accepted) >= self.limit_per_minute:
            if now >= robot.throttled_until:
                robot.throttled_until = now + self.throttle_s
            self.throttle_answers += 1
            return answer(130101, "send too fast, exceed 20 times per minute")
        if not hit.headers.get("content-type", "").lower().startswith("application/json"):
            return answer(43004, "无效的HTTP HEADER Content-Type")
        if len(hit.body) > self.max_body_bytes:
            return answer(460101, "message too long, exceed 20000 bytes")
        try:
            message = json.loads(hit.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return answer(40035, "缺少参数 json")
        problem = check_message(message)
        if problem is not None:
            return problem
        content = message_text(message)
        if robot.keywords and not any(k in content for k in robot.keywords):
            return answer(310000, "keywords not in content, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]")
        for word, (code, text) in self.refuse_words.items():
            if word in content:
                return answer(code, text)
        robot.accepted.append(now)
        robot.messages.append({**message, "_at": now})
        return answer(0, "ok")


def message_text(message: dict[str, Any]) -> str:
    kind = message["msgtype"]
    if kind == "text":
        return str(message["text"]["content"])
    if kind == "markdown":
        return f"{message['markdown']['title']}\n{message['markdown']['text']}"
    return json.dumps(message.get(kind), ensure_ascii=False)


def check_message(message: Any) -> Answer | None:
    """DingTalk's answer to a malformed message, or None for a well-formed one."""
    if not isinstance(message, dict):
        return answer(40035, "缺少参数 json")
    kind = message.get("msgtype")
    if kind not in MSGTYPES:
        return answer(400105, "不支持的消息类型")
    unknown = set(message) - {"msgtype", kind, "at"}
    if unknown:
        return answer(40035, f"缺少参数 msgtype (unknown keys {sorted(unknown)})")
    body = message.get(kind)
    if not isinstance(body, dict):
        return answer(40035, f"缺少参数 {kind}")
    if kind == "text" and (set(body) != {"content"} or not isinstance(body["content"], str) or not body["content"]):
        return answer(40035, "缺少参数 text.content")
    if kind == "markdown" and (set(body) != {"title", "text"} or not all(isinstance(body[k], str) and body[k] for k in ("title", "text"))):
        return answer(40035, "缺少参数 markdown.title/markdown.text")
    at = message.get("at")
    if at is not None:
        if not isinstance(at, dict) or set(at) - AT_KEYS:
            return answer(40035, "缺少参数 at")
        for key in ("atMobiles", "atUserIds"):
            value = at.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return answer(40035, f"缺少参数 at.{key}")
        if not isinstance(at.get("isAtAll", False), bool):
            return answer(40035, "缺少参数 at.isAtAll")
    return None

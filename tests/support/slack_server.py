"""A Slack incoming-webhook endpoint for tests, checking messages as strictly as hooks.slack.com does.

Answers are Slack's: a short text code in the body with the HTTP status Slack gives it.

* a path that is not the webhook's: 404 no_service; a disabled webhook (`disable(code)`): that code
  (404 no_service, 403 invalid_token, 410 channel_is_archived, 403 action_prohibited, ...);
* not POST: 405; Content-Type not application/json: 400 invalid_payload; not a JSON object: 400 invalid_payload;
* rate: more than `per_second` messages in any second: 429 rate_limited with Retry-After: 1;
* neither `text` nor `blocks`: 400 no_text;
* `blocks` breaking Block Kit's rules: 400 invalid_blocks. Checked: a list of at most 50 blocks, each an
  object of a known type with only its own keys — header (plain_text ≤ 150 characters), section (text ≤ 3000
  characters and/or 1–10 fields ≤ 2000 each), context (1–10 text elements), divider —, block_id ≤ 255
  characters and unique, text objects `{type: plain_text|mrkdwn, text: non-empty}` with `emoji` only on
  plain_text and `verbatim` only on mrkdwn;
* `refuse_words`: a message holding such a word gets that (status, code) (e.g. Slack refusing content);
* else stored: 200 ok. A `text` over 40000 characters is stored truncated, as Slack does.

The clock (`clock`, seconds) is injectable, for the rate window.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tests.support.webhook_server import Answer, Hit, ScriptedServer

HTML = {"Content-Type": "text/html"}
MAX_BLOCKS = 50
TEXT_LIMIT = 40000
BLOCK_KEYS = {
    "header": ({"type", "text", "block_id"}, {"text"}),
    "section": ({"type", "text", "fields", "accessory", "block_id"}, set()),
    "context": ({"type", "elements", "block_id"}, {"elements"}),
    "divider": ({"type", "block_id"}, set()),
}


def code(status: int, text: str, headers: dict[str, str] | None = None) -> Answer:
    return status, {**HTML, **(headers or {})}, text.encode()


class SlackServer(ScriptedServer):
    """`with SlackServer() as slack:` an incoming webhook at `slack.url`."""

    name = "slack-server"

    def __init__(
        self,
        *,
        path: str = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        per_second: int = 1,
        clock: Callable[[], float] = time.monotonic,
        refuse_words: dict[str, tuple[int, str]] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.path, self.per_second, self.clock = path, per_second, clock
        self.refuse_words = refuse_words or {}
        self.disabled: tuple[int, str] | None = None
        self.messages: list[dict[str, Any]] = []
        self.rate_limited = 0  # 429 answers given
        self.problems: list[str] = []  # why each refused message was refused
        self._recent: deque[float] = deque()

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def disable(self, status: int = 404, text: str = "no_service") -> None:
        self.disabled = (status, text)

    def handle(self, hit: Hit) -> Answer:
        if hit.path != self.path:
            return code(404, "no_service")
        if self.disabled is not None:
            return code(*self.disabled)
        if hit.method != "POST":
            return code(405, "invalid_method")
        if not hit.headers.get("content-type", "").startswith("application/json"):
            return code(400, "invalid_payload")
        try:
            message = json.loads(hit.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return code(400, "invalid_payload")
        if not isinstance(message, dict):
            return code(400, "invalid_payload")
        now = self.clock()
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.per_second:
            self.rate_limited += 1
            return code(429, "rate_limited", {"Retry-After": "1"})
        text, blocks = message.get("text"), message.get("blocks")
        if not text and not blocks:
            return code(400, "no_text")
        if text is not None and not isinstance(text, str):
            return code(400, "invalid_payload")
        if blocks is not None:
            problem = check_blocks(blocks)
            if problem is not None:
                self.problems.append(problem)
                return code(400, "invalid_blocks")
        content = json.dumps(message, ensure_ascii=False)
        for word, (status, reply) in self.refuse_words.items():
            if word in content:
                return code(status, reply)
        self._recent.append(now)
        if isinstance(text, str) and len(text) > TEXT_LIMIT:
            message = {**message, "text": text[:TEXT_LIMIT]}
        self.messages.append(message)
        return code(200, "ok")


def check_text(obj: Any, where: str, *, limit: int, kinds: tuple[str, ...] = ("plain_text", "mrkdwn")) -> str | None:
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return f"{where}: expected a text object of type {' or '.join(kinds)}"
    allowed = {"type", "text", "emoji"} if obj["type"] == "plain_text" else {"type", "text", "verbatim"}
    if set(obj) - allowed:
        return f"{where}: unknown keys {sorted(set(obj) - allowed)}"
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return f"{where}.text: must be a non-empty string"
    if len(text) > limit:
        return f"{where}.text: {len(text)} characters, more than {limit}"
    for key in ("emoji", "verbatim"):
        if key in obj and not isinstance(obj[key], bool):
            return f"{where}.{key}: must be a boolean"
    return None


def check_blocks(blocks: Any) -> str | None:
    """Why `blocks` breaks Block Kit's rules, or None."""
    if not isinstance(blocks, list) or not blocks:
        return "blocks: expected a non-empty list"
    if len(blocks) > MAX_BLOCKS:
        return f"blocks: {len(blocks)} blocks, more than {MAX_BLOCKS}"
    ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_KEYS:
            return f"{where}: unknown block type"
        allowed, required = BLOCK_KEYS[block["type"]]
        if set(block) - allowed or required - set(block):
            return f"{where}: keys {sorted(block)} (allowed {sorted(allowed)}, required {sorted(required)})"
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not block_id or len(block_id) > 255 or block_id in ids:
                return f"{where}.block_id: invalid or repeated"
            ids.add(block_id)
        kind = block["type"]
        problem: str | None = None
        if kind == "header":
            problem = check_text(block["text"], f"{where}.text", limit=150, kinds=("plain_text",))
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                return f"{where}: a section needs text or fields"
            if "text" in block:
                problem = check_text(block["text"], f"{where}.text", limit=3000)
            fields = block.get("fields")
            if problem is None and fields is not None:
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    return f"{where}.fields: 1 to 10 text objects"
                for k, f in enumerate(fields):
                    problem = problem or check_text(f, f"{where}.fields[{k}]", limit=2000)
        elif kind == "context":
            elements = block["elements"]
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                return f"{where}.elements: 1 to 10 elements"
            for k, e in enumerate(elements):
                problem = problem or check_text(e, f"{where}.elements[{k}]", limit=3000)
        if problem is not None:
            return problem
    return None

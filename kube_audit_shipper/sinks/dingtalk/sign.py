"""DingTalk's custom-robot signature (加签): computed for every attempt, since DingTalk refuses a timestamp more than
an hour from its clock and a retried request may go out much later than it was encoded.

    sign = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp_ms}\\n{secret}")))
    POST {url}?access_token=T&timestamp=<timestamp_ms>&sign=<sign>
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote


def signature(secret: str, timestamp_ms: int) -> str:
    """base64(HMAC-SHA256(secret, "<timestamp_ms>\\n<secret>")), not yet URL-encoded."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def send_url(url: str, access_token: str, secret: str | None, timestamp_ms: int) -> str:
    """The robot URL with its query: access_token, and when the robot signs, timestamp and sign (each URL-encoded once)."""
    query = f"access_token={quote(access_token, safe='')}"
    if secret is not None:
        query += f"&timestamp={timestamp_ms}&sign={quote(signature(secret, timestamp_ms), safe='')}"
    return f"{url}?{query}"

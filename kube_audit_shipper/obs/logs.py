"""Logging to stderr: plain text or one JSON object per line (`--log-format json`).

Three things happen to every record on its way out, in the one handler `setup` installs:

* **Secrets are scrubbed** (`Scrubber`): the value of any field whose key names a secret (password,
  token, secret, access_key_secret, hash_key, authorization, …, at any depth of a dict or list field),
  `Authorization:`/`x-acs-security-token:`/cookie header values, `key=value` and `"key": "value"`
  pairs with such keys inside any text (message, field value, exception and traceback), bearer
  tokens and JWTs, URL passwords (`scheme://user:PASSWORD@host`), and any value registered with
  `Scrubber.add_values`. Values that are not JSON types (a config object, say) are scrubbed as their
  str(). The message, every field value and the traceback are scrubbed each on its own (never the
  whole line, whose logger name or JSON syntax a pattern could mistake for a key).
* **Repeated records are rate limited** (`LogHandler`): the first record of a (logger, level,
  message, string-valued fields) is written; the same record again within `rate_limit_s` is only counted, and when that
  window ends (noticed at the next record of any kind, or at shutdown) one line
  "<message> (repeated N more times in Ts)" with a `repeated` field says how many were held back
  (T: from the first to the last of them).
  DEBUG records are never held back.
* **Priorities for journald**: when stderr is connected to the journal (systemd sets JOURNAL_STREAM
  to its device:inode), each line starts with the syslog priority `<3>`, `<4>`, … that journald
  turns into the entry's PRIORITY, so `journalctl -p warning` works.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

MASK = "***"

# Key names whose values are secrets (substring match, case-insensitive): field names, dict keys,
# `key=value` / `"key": "value"` in text, HTTP header names.
_SECRET_WORDS = (
    r"secret|passw(?:or)?d|pwd|token|authorization|auth[_-]?header|hash[_-]?key|api[_-]?key|private[_-]?key"
    r"|credential|cookie|signature|session[_-]?key|access[_-]?key[_-]?(?:secret|id)|security[_-]?token|webhook[_-]?url"
)
_SECRET_KEY = re.compile(rf"(?i)(?:{_SECRET_WORDS})")

# `key=value`, `key: value`, `"key": "value"`, `'key'='value'`, `key = "a \" b"`; the key may be part
# of a longer name (db_password, X-Acs-Security-Token). A value after a header-style key may start
# with an authentication scheme (Bearer, Basic, acs, …), which is kept.
_KV = re.compile(
    rf"""(?ix)
    (?P<key>[A-Za-z0-9_.\-]*(?:{_SECRET_WORDS})[A-Za-z0-9_.\-]*)
    (?P<kq>["']?)
    (?P<sep>[ \t]*[:=][ \t]*)
    (?P<scheme>(?:bearer|basic|digest|negotiate|acs|log|aws4-hmac-sha256|token)[ \t]+)?
    (?P<value>"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|[^\s"',;&}}\])]+)
    """
)
# A bearer token on its own ("... with Bearer eyJhbGciOi..."), a JWT anywhere, a URL's password.
_BEARER = re.compile(r"(?i)\b((?:bearer[ \t]+)+)([A-Za-z0-9\-._~+/]+=*)")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*:)([^@\s/]+)(@)")

# A value already masked (or empty) is left as it is, so scrubbing is idempotent.
_MASKED_VALUES = {MASK, f'"{MASK}"', f"'{MASK}'", '""', "''"}

# journald: syslog priorities by level.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class Scrubber:
    """Masks secrets in text and in structured log fields (see the module docstring)."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._values_re: re.Pattern[str] | None = None
        self.add_values(values)

    def add_values(self, values: Iterable[str]) -> None:
        """Mask these exact strings wherever they appear (e.g. secrets substituted into the config).
        Values shorter than 4 characters are ignored: masking them would garble every line."""
        new = {v for v in values if isinstance(v, str) and len(v) >= 4} - self._values
        if new:
            self._values |= new
            alternatives = sorted(self._values, key=len, reverse=True)
            self._values_re = re.compile("|".join(re.escape(v) for v in alternatives))

    @staticmethod
    def is_secret_key(key: object) -> bool:
        return isinstance(key, str) and _SECRET_KEY.search(key) is not None

    def text(self, s: str) -> str:
        if self._values_re is not None:
            s = self._values_re.sub(MASK, s)
        s = _KV.sub(_mask_kv, s)
        s = _BEARER.sub(lambda m: m.group(1) + MASK, s)
        s = _JWT.sub(MASK, s)
        return _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), s)

    def value(self, v: Any, _depth: int = 0) -> Any:
        """A field value with secrets masked: JSON-native types are kept (dict keys naming a secret
        have their values masked), anything else becomes its scrubbed str()."""
        if v is None or isinstance(v, (bool, int, float)):
            return v
        if isinstance(v, str):
            return self.text(v)
        if _depth < 8 and isinstance(v, dict):
            return {str(k): (MASK if self.is_secret_key(k) and v2 is not None else self.value(v2, _depth + 1)) for k, v2 in v.items()}
        if _depth < 8 and isinstance(v, (list, tuple, set, frozenset)):
            return [self.value(x, _depth + 1) for x in v]
        return self.text(str(v))

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record's extra fields, scrubbed."""
        return {k: (MASK if self.is_secret_key(k) and v is not None else self.value(v)) for k, v in vars(record).items() if k not in _STD}


def _mask_kv(m: re.Match[str]) -> str:
    value = m.group("value")
    if value in _MASKED_VALUES:
        return m.group(0)
    masked = value[0] + MASK + (value[0] if len(value) > 1 and value[-1] == value[0] else "") if value[:1] in "\"'" else MASK
    return m.group("key") + m.group("kq") + m.group("sep") + (m.group("scheme") or "") + masked


class JsonFormatter(logging.Formatter):
    def __init__(self, scrubber: Scrubber | None = None) -> None:
        super().__init__()
        self.scrubber = scrubber or Scrubber()

    def format(self, record: logging.LogRecord) -> str:
        sc = self.scrubber
        doc: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": sc.text(record.getMessage()),
        }
        for k, v in sc.fields(record).items():
            doc.setdefault(k, v)  # a field never replaces time, level, logger or msg
        if record.exc_info:
            doc["exception"] = sc.text(self.formatException(record.exc_info))
        if record.stack_info:
            doc["stack"] = sc.text(self.formatStack(record.stack_info))
        # every string in doc is scrubbed already; no pass over the serialized line, which could
        # break its JSON syntax (a regex cannot see escapes reliably)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, scrubber: Scrubber | None = None) -> None:
        super().__init__()
        self.scrubber = scrubber or Scrubber()

    def format(self, record: logging.LogRecord) -> str:
        sc = self.scrubber
        parts = []
        for k, v in sc.fields(record).items():
            s = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)
            parts.append(f"{k}={s!r}" if isinstance(v, str) and (" " in s or s == "") else f"{k}={s}")
        line = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname:<7} {record.name}: {sc.text(record.getMessage())}"
        if parts:
            line += " " + " ".join(parts)
        if record.exc_info:
            line += "\n" + sc.text(self.formatException(record.exc_info))
        if record.stack_info:
            line += "\n" + sc.text(self.formatStack(record.stack_info))
        return line


class _Window:
    __slots__ = ("ends", "first", "last", "last_at", "suppressed")

    def __init__(self, ends: float, first: float) -> None:
        self.ends, self.first, self.suppressed = ends, first, 0
        self.last: logging.LogRecord | None = None
        self.last_at = first


class LogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """StreamHandler with rate limiting of repeated records and optional journald priority prefixes.

    A window per (logger, level, message, string fields) opens at its first record and lasts `rate_limit_s`; records
    with the same key inside it are counted, not written. Windows end in the order they opened, so
    the due summaries are found at the front of an ordered dict. At most `max_keys` windows are kept;
    the oldest is closed (and summarised) early to make room. `rate_limit_s <= 0` disables limiting.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        rate_limit_s: float = 60.0,
        max_keys: int = 1024,
        min_level: int = logging.INFO,
        journal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self.rate_limit_s = rate_limit_s
        self.max_keys = max(1, max_keys)
        self.min_level = min_level
        self.clock = clock
        self.journal = _is_journal(self.stream) if journal is None else journal
        self._windows: collections.OrderedDict[_Key, _Window] = collections.OrderedDict()

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if self.journal:
            prefix = f"<{_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)}>"
            line = "\n".join(prefix + part for part in line.split("\n"))
        return line

    def emit(self, record: logging.LogRecord) -> None:
        if self.rate_limit_s <= 0:
            super().emit(record)
            return
        now = self.clock()
        self._close_windows(lambda w: w.ends <= now, now)
        if record.levelno < self.min_level:
            super().emit(record)
            return
        try:
            key = _key(record)
        except Exception:  # noqa: BLE001  # a bad format string: let logging report it as it always does
            self.handleError(record)
            return
        window = self._windows.get(key)
        if window is not None:
            window.suppressed += 1
            window.last, window.last_at = record, now
            return
        if len(self._windows) >= self.max_keys:
            oldest = next(iter(self._windows.values()))
            self._close_windows(lambda w: w is oldest, now)
        self._windows[key] = _Window(now + self.rate_limit_s, now)
        super().emit(record)

    def flush_repeats(self) -> None:
        """Write the summaries of every open window now (called at close)."""
        self.acquire()
        try:
            now = self.clock()
            self._close_windows(lambda w: True, now)
        finally:
            self.release()

    def close(self) -> None:
        try:
            self.flush_repeats()
        finally:
            super().close()

    def _close_windows(self, due: Callable[[_Window], bool], now: float) -> None:
        """Close windows from the oldest while `due` says so; write a summary for each that held records back."""
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if not due(window):
                return
            del self._windows[key]
            if window.suppressed and window.last is not None:
                super().emit(_summary(window.last, key[2], window.suppressed, window.last_at - window.first))


_Key = tuple[str, int, str, tuple[tuple[str, str], ...]]


def _key(record: logging.LogRecord) -> _Key:
    """What makes two records "the same": logger, level, message, and the string-valued fields.

    The agent logs constant messages with the subject in fields ("new file" path=…, "sink send
    failed; retrying" sink=… reason=…): two files or two sinks are two keys. Numbers (attempt,
    offset, retry_in_s, bytes) are left out, so the retries of one failure are one key."""
    context = tuple(sorted((k, v) for k, v in vars(record).items() if k not in _STD and isinstance(v, str)))
    return (record.name, record.levelno, record.getMessage(), context)


def _summary(last: logging.LogRecord, message: str, repeated: int, elapsed: float) -> logging.LogRecord:
    attrs = {k: v for k, v in vars(last).items() if k not in _STD}
    attrs.update(
        name=last.name,
        levelno=last.levelno,
        levelname=last.levelname,
        pathname=last.pathname,
        filename=last.filename,
        module=last.module,
        lineno=last.lineno,
        funcName=last.funcName,
        msg="%s (repeated %d more times in %.0fs)",
        args=(message, repeated, elapsed),
        repeated=repeated,
    )
    return logging.makeLogRecord(attrs)


def _is_journal(stream: IO[str] | Any) -> bool:
    """True when `stream` is the journald stream systemd connected (JOURNAL_STREAM=<dev>:<ino>)."""
    spec = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = spec.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return st.st_dev == int(dev) and st.st_ino == int(ino)
    except (AttributeError, OSError, ValueError):
        return False


def setup(
    level: str = "info",
    fmt: str = "text",
    *,
    stream: IO[str] | None = None,
    rate_limit_s: float = 60.0,
    journal: bool | None = None,
    scrubber: Scrubber | None = None,
) -> LogHandler:
    """Install the one handler on the root logger (replacing any) and return it.

    `journal=None` detects whether the stream is journald's; `rate_limit_s <= 0` turns off rate
    limiting; `scrubber` may be given to register known secret values later (`add_values`).
    """
    sc = scrubber or Scrubber()
    handler = LogHandler(stream, rate_limit_s=rate_limit_s, journal=journal)
    handler.setFormatter(JsonFormatter(sc) if fmt == "json" else TextFormatter(sc))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        if isinstance(old, LogHandler):
            old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # libraries that log every request at INFO (the sinks' HTTP clients): only their warnings
    for noisy in ("httpx", "httpcore", "botocore", "aiobotocore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler

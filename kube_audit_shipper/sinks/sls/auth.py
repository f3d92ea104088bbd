"""SLS request signing (v1 HMAC-SHA1 and v4 SLS4-HMAC-SHA256) and credentials that can change under us.

v1 (what Logtail and the SDKs use by default; `aliyun/log/auth.py` AuthV1, Logtail `GetUrlSignature`):

    StringToSign = VERB "\\n" Content-MD5 "\\n" Content-Type "\\n" Date "\\n"
                   CanonicalizedLOGHeaders       # x-log-* (not x-log-meta-*, not x-log-date) and x-acs-*,
                                                 # lower-case, sorted, "name:value\\n" each
                   CanonicalizedResource         # path [+ "?" + sorted k=v joined by "&", not URL-encoded]
    Authorization: LOG <AccessKeyId>:base64(HMAC-SHA1(secret, StringToSign))

v4 (SDK AuthV4): x-log-content-sha256 and x-log-date (%Y%m%dT%H%M%SZ) headers; a canonical request over the
method, path, sorted URI-encoded params, content-type/host/x-log-*/x-acs-* headers and the payload hash; scope
`<yyyymmdd>/<region>/sls/aliyun_v4_request`; the key chained HMAC-SHA256 from "aliyun_v4"+secret over date,
region, "sls", "aliyun_v4_request"; `Authorization: SLS4-HMAC-SHA256 Credential=<AK>/<scope>,Signature=<hex>`.

The tests check both against the official SDK's own code (tests/support/sls_server.py verifies every request
with it) and against the test vector in the research notes.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from urllib.parse import quote

log = logging.getLogger(__name__)

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def content_md5(body: bytes) -> str:
    """Content-MD5 as SLS wants it: upper-case hex (not base64)."""
    return hashlib.md5(body).hexdigest().upper()


def http_date(epoch_s: float) -> str:
    """RFC 1123 GMT date (`Mon, 03 Jan 2010 08:33:47 GMT`), locale-independent."""
    return formatdate(epoch_s, usegmt=True)


def _is_signed_header(lower: str) -> bool:
    return lower.startswith("x-acs-") or (lower.startswith("x-log-") and not lower.startswith("x-log-meta-"))


def string_to_sign_v1(method: str, resource: str, params: Mapping[str, str], headers: Mapping[str, str]) -> str:
    lower = {k.lower(): v for k, v in headers.items()}
    parts = [method, "\n", lower.get("content-md5", ""), "\n", lower.get("content-type", ""), "\n", lower.get("date", ""), "\n"]
    for name in sorted(k for k in lower if _is_signed_header(k) and k != "x-log-date"):
        parts.append(f"{name}:{lower[name]}\n")
    parts.append(resource)
    if params:
        parts.append("?" + "&".join(f"{k}={v}" for k, v in sorted(params.items())))
    return "".join(parts)


def sign_v1(secret: str, method: str, resource: str, params: Mapping[str, str], headers: Mapping[str, str]) -> str:
    """The signature part of `Authorization: LOG <id>:<signature>`."""
    digest = hmac.new(secret.encode(), string_to_sign_v1(method, resource, params, headers).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _uri_encode(value: str) -> str:
    return quote(value.encode(), safe="~")


def canonical_request_v4(method: str, resource: str, params: Mapping[str, str], headers: Mapping[str, str], payload_sha256: str) -> tuple[str, str]:
    """(canonical request, signed header names joined by ';')."""
    canon = {}
    for k, v in headers.items():
        lk = k.lower()
        if lk in ("content-type", "host") or _is_signed_header(lk):
            canon[lk] = v
    names = sorted(canon)
    header_lines = "".join(f"{k}:{canon[k].strip()}\n" for k in names)
    query = "&".join(f"{k}={_uri_encode(v)}" if v else k for k, v in sorted(params.items()))
    signed = ";".join(names)
    return f"{method}\n{resource}\n{query}\n{header_lines}\n{signed}\n{payload_sha256}", signed


def sign_v4(
    secret: str, region: str, method: str, resource: str, params: Mapping[str, str], headers: Mapping[str, str], payload_sha256: str
) -> tuple[str, str]:
    """(scope, hex signature) for headers that already carry x-log-date and x-log-content-sha256."""
    lower = {k.lower(): v for k, v in headers.items()}
    stamp = lower["x-log-date"]
    day = stamp[:8]
    scope = f"{day}/{region}/sls/aliyun_v4_request"
    canonical, _ = canonical_request_v4(method, resource, params, headers, payload_sha256)
    to_sign = f"SLS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = ("aliyun_v4" + secret).encode()
    for part in (day, region, "sls", "aliyun_v4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return scope, hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    access_key_secret: str
    security_token: str = ""
    origin: str = ""  # where they came from, for messages (never the secret)

    def __repr__(self) -> str:  # never print the secret or the token
        return f"Credentials(access_key_id={self.access_key_id!r}, origin={self.origin!r})"


class CredentialsError(Exception):
    """No usable credentials (yet): the sink reports itself blocked and keeps the data."""


_FILE_KEYS = {
    "id": ("accesskeyid", "access_key_id", "alibaba_cloud_access_key_id"),
    "secret": ("accesskeysecret", "access_key_secret", "alibaba_cloud_access_key_secret"),
    "token": ("securitytoken", "security_token", "sts_token", "alibaba_cloud_security_token"),
}


def _pick(values: Mapping[str, object], what: str) -> str:
    lower = {str(k).lower(): v for k, v in values.items()}
    for key in _FILE_KEYS[what]:
        v = lower.get(key)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return ""


def parse_credentials_text(text: str, origin: str) -> Credentials:
    """Credentials from a JSON object (ECS/RRSA style: AccessKeyId, AccessKeySecret, SecurityToken; also nested
    under "Credentials") or an INI file (access_key_id, access_key_secret, security_token; section [default]
    preferred, else the first)."""
    stripped = text.strip()
    values: Mapping[str, object]
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise CredentialsError(f"{origin}: not valid JSON: {exc}") from exc
        if isinstance(data.get("Credentials"), dict):
            data = data["Credentials"]
        values = data
    else:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(stripped if stripped.startswith("[") else "[default]\n" + stripped)
        except configparser.Error as exc:
            raise CredentialsError(f"{origin}: neither JSON nor INI: {exc.__class__.__name__}") from exc
        sections = parser.sections()
        if not sections:
            raise CredentialsError(f"{origin}: empty")
        values = dict(parser["default"] if "default" in sections else parser[sections[0]])
    key_id, secret = _pick(values, "id"), _pick(values, "secret")
    if not key_id or not secret:
        raise CredentialsError(f"{origin}: no AccessKeyId/AccessKeySecret in it")
    return Credentials(key_id, secret, _pick(values, "token"), origin)


class CredentialSource:
    """Where the sink's credentials come from; `get()` is cheap (one stat for a file) and thread-safe.

    A file is re-read whenever its (mtime, size, inode) changes, or after `invalidate()` (the server said the
    credentials are wrong or expired: maybe a rotation we have not seen yet). A file that is unreadable or half
    written keeps the last good credentials (with a warning) until it is valid again.
    """

    def __init__(
        self,
        *,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        security_token: str | None = None,
        credentials_file: str | None = None,
        env_names: tuple[str, str, str] = ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN"),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._static = Credentials(access_key_id, access_key_secret, security_token or "", "config") if access_key_id and access_key_secret else None
        self.file = credentials_file
        self.env_names = env_names
        self._environ = environ
        self._lock = threading.Lock()
        self._file_stamp: tuple[int, int, int] | None = None
        self._file_creds: Credentials | None = None
        self._file_error: str | None = None
        self.reloads = 0

    def describe(self) -> str:
        if self._static is not None:
            return "access_key_id/access_key_secret in the config"
        if self.file:
            return f"credentials_file {self.file}"
        return "environment " + "/".join(self.env_names[:2])

    def invalidate(self) -> None:
        with self._lock:
            self._file_stamp = None

    def get(self) -> Credentials:
        if self._static is not None:
            return self._static
        if self.file:
            return self._from_file(self.file)
        env = self._environ if self._environ is not None else os.environ
        key_id, secret, token = (env.get(n, "").strip() for n in self.env_names)
        if not key_id or not secret:
            raise CredentialsError(
                f"no credentials: set access_key_id/access_key_secret, credentials_file, or the environment variables {self.env_names[0]} and {self.env_names[1]}"
            )
        return Credentials(key_id, secret, token, "environment")

    def _from_file(self, path: str) -> Credentials:
        with self._lock:
            try:
                st = os.stat(path)
            except OSError as exc:
                if self._file_creds is not None:
                    return self._file_creds  # deleted while being replaced: keep the last good ones
                raise CredentialsError(f"credentials_file {path}: {exc.strerror or exc}") from exc
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._file_stamp and self._file_creds is not None:
                return self._file_creds
            try:
                with open(path, encoding="utf-8") as fh:
                    creds = parse_credentials_text(fh.read(), f"credentials_file {path}")
            except (OSError, UnicodeDecodeError, CredentialsError) as exc:
                message = str(exc) if isinstance(exc, CredentialsError) else f"credentials_file {path}: {exc}"
                if message != self._file_error:
                    self._file_error = message
                    log.warning(
                        "cannot read SLS credentials; keeping the previous ones" if self._file_creds else "cannot read SLS credentials",
                        extra={"reason": message},
                    )
                if self._file_creds is not None:
                    return self._file_creds
                raise CredentialsError(message) from exc
            if self._file_creds is not None and creds != self._file_creds:
                self.reloads += 1
                log.info("SLS credentials reloaded", extra={"file": path, "access_key_id": creds.access_key_id, "sts": bool(creds.security_token)})
            self._file_error = None
            self._file_creds = creds
            self._file_stamp = stamp
            return creds


def v4_timestamp(epoch_s: float) -> str:
    return datetime.fromtimestamp(int(epoch_s), UTC).strftime("%Y%m%dT%H%M%SZ")


def sign_request(
    *,
    method: str,
    resource: str,
    params: Mapping[str, str],
    headers: dict[str, str],
    body: bytes,
    creds: Credentials,
    now: float,
    version: str = "v1",
    region: str = "",
    payload_sha256: str | None = None,
) -> None:
    """Add Date, the token and Authorization (and for v4 x-log-date/x-log-content-sha256) to `headers`.

    `headers` must already hold Content-Type, Content-MD5 (for a body), x-log-* and Host (v4 signs it).
    `now` is the (clock-skew corrected) time to sign with.
    """
    headers["Date"] = http_date(now)
    if creds.security_token:
        headers["x-acs-security-token"] = creds.security_token
    else:
        headers.pop("x-acs-security-token", None)
    if version == "v4":
        headers.pop("x-log-signaturemethod", None)
        headers["x-log-content-sha256"] = payload_sha256 or (hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256)
        headers["x-log-date"] = v4_timestamp(now)
        scope, signature = sign_v4(creds.access_key_secret, region, method, resource, params, headers, headers["x-log-content-sha256"])
        headers["Authorization"] = f"SLS4-HMAC-SHA256 Credential={creds.access_key_id}/{scope},Signature={signature}"
    else:
        headers["x-log-signaturemethod"] = "hmac-sha1"
        headers["Authorization"] = f"LOG {creds.access_key_id}:{sign_v1(creds.access_key_secret, method, resource, params, headers)}"

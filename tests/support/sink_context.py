"""What tests hand a sink besides its config: a SinkContext, an HTTP client factory that answers without a
network, and the sink's background work run while the test uses the sink (its runner does this in the agent)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kube_audit_shipper.delivery.config import HttpSinkConfigBase
from kube_audit_shipper.delivery.context import HttpClient, HttpClientFactory, SinkContext
from kube_audit_shipper.delivery.contract import Reply, Sink
from kube_audit_shipper.sinks.registry import sink_context


def context(state_dir: Path | str, *, node: str = "cp-1", input_paths: Sequence[str] = (), http: HttpClientFactory | None = None) -> SinkContext:
    """The agent's context for a sink (its real HTTP client factory unless `http` is given)."""
    ctx = sink_context(node=node, state_dir=state_dir, input_paths=input_paths)
    if http is None:
        return ctx
    return SinkContext(node=ctx.node, state_dir=ctx.state_dir, input_paths=ctx.input_paths, http=http)


@dataclass
class Sent:
    method: str
    url: str
    content: bytes
    headers: dict[str, str]
    params: dict[str, str] | None


@dataclass
class ScriptedHttp:
    """An HTTP client factory whose clients answer from `answer(sent)`: a Reply, or an exception to raise (a
    transport error). Every request is recorded in `sent`, with the timeout and TLS settings it was made with."""

    answer: Callable[[Sent], Reply | BaseException]
    sent: list[Sent] = field(default_factory=list)
    made: list[HttpSinkConfigBase] = field(default_factory=list)
    closed: int = 0

    def __call__(self, cfg: HttpSinkConfigBase, *, max_connections: int = 2) -> HttpClient:
        self.made.append(cfg)
        return _ScriptedClient(self)


class _ScriptedClient:
    def __init__(self, factory: ScriptedHttp) -> None:
        self.factory = factory

    async def request(
        self, method: str, url: str, *, content: bytes = b"", headers: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None
    ) -> Reply:
        sent = Sent(method, url, content, dict(headers or {}), dict(params) if params else None)
        self.factory.sent.append(sent)
        answer = self.factory.answer(sent)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def aclose(self) -> None:
        self.factory.closed += 1


@contextlib.asynccontextmanager
async def working(sink: Sink) -> AsyncIterator[asyncio.Task[Any]]:
    """Run the sink's background work (as its runner does) while the block runs; a failure of it fails the test.
    Close the sink inside the block: the work then ends by itself; what is still running at the end is cancelled."""
    task = asyncio.get_running_loop().create_task(sink.run_background(), name=f"sink-work:{sink.name}")
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if not task.cancelled() and task.exception() is not None:
        raise AssertionError(f"the background work of sink {sink.name} died") from task.exception()

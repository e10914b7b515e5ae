"""What the slow-client defences cost a request, in-process under uvloop (no server, no
network): a one-chunk body read bare, with `BodyDeadlines` (one sweeping timer per process),
and inside `asyncio.timeout` (a timer per request, the alternative not taken); and `App.handle`
against `App.handle_counted` (the per-address cap) on /health.

    .venv/bin/python -m benchmarks.body_deadline

CPU time (process_time), best of several rounds, so a busy machine skews it less.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import uvloop

from modelport.http.app import App
from modelport.http.client_limits import BodyDeadlines
from modelport.http.exchange import read_limited
from modelport.settings import load_settings

ROUNDS, N = 5, 100_000


class OneChunk:
    """A small body as granian hands it over: one chunk, then the end."""

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        self._done = True
        return b"x" * 1000


class HealthExchange:
    __slots__ = ("client", "extra_headers", "method", "path", "responded")

    def __init__(self) -> None:
        self.method, self.path, self.client = "GET", "/health", "10.1.2.3"
        self.responded = False
        self.extra_headers: Sequence[tuple[str, str]] = ()

    def header(self, name: str) -> str | None:
        return None

    async def respond(
        self, status: int, body: bytes, content_type: str = "", headers: object = ()
    ) -> None:
        self.responded = True


async def best(step: Callable[[], Awaitable[object]]) -> float:
    fastest = float("inf")
    for _ in range(ROUNDS):
        start = time.process_time()
        for _ in range(N):
            await step()
        fastest = min(fastest, (time.process_time() - start) / N)
    return fastest * 1e6


async def main() -> None:
    deadlines = BodyDeadlines(15.0, 32 * 1024)

    async def in_timeout() -> bytes:
        async with asyncio.timeout(15.0):
            return await read_limited(OneChunk(), 1 << 25)

    bare = await best(lambda: read_limited(OneChunk(), 1 << 25))
    swept = await best(lambda: read_limited(OneChunk(), 1 << 25, deadlines))
    timed = await best(in_timeout)
    print(f"body read, bare:              {bare:6.2f} µs")
    print(f"  with BodyDeadlines:         {swept:6.2f} µs  (+{swept - bare:.2f})")
    print(f"  inside asyncio.timeout:     {timed:6.2f} µs  (+{timed - bare:.2f})")

    app = App(load_settings({}))
    app.state = object()  # type: ignore[assignment]  # /health reads no state
    plain = await best(lambda: app.handle(HealthExchange()))  # type: ignore[arg-type]
    counted = await best(lambda: app.handle_counted(HealthExchange()))  # type: ignore[arg-type]
    print(f"/health, handle:              {plain:6.2f} µs")
    print(f"  handle_counted (the cap):   {counted:6.2f} µs  (+{counted - plain:.2f})")


if __name__ == "__main__":
    uvloop.run(main())

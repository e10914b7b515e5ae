"""A minimal ASGI toolkit: the request view and the two ways to answer (a body or a stream).

Kept small on purpose: the gateway's hot path pays for every layer between the socket and the
backend, so there is no framework here, only what the routes need.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from modelport.core.errors import PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")

JSON = b"application/json"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class Request:
    __slots__ = ("_headers", "method", "path", "query", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: bytes = scope.get("query_string", b"")
        self._headers: dict[bytes, bytes] | None = None

    def header(self, name: bytes) -> bytes | None:
        """A request header by lower-case name."""
        if self._headers is None:
            self._headers = {key.lower(): value for key, value in self.scope["headers"]}
        return self._headers.get(name)

    async def body(self, limit: int) -> bytes:
        """The whole request body; PayloadTooLarge beyond `limit` bytes."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    response_headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    if headers:
        response_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


# A client reading slower than the model writes: past this many buffered bytes the producer
# waits for the socket instead of buffering more.
MAX_BUFFERED_BYTES = 1 << 20


async def send_stream(
    send: Send, receive: Receive, items: AsyncGenerator[T, None], encode: Callable[[T], bytes]
) -> bool:
    """Stream `items`, each turned into bytes by `encode`, as an SSE response; stop early if
    the client goes away.

    A writer task sends what the producer has buffered since its last send, so chunks that
    arrive together (one upstream read holding many events, or events produced while a send
    was in flight) leave in one write, while a lone chunk still goes out at once.

    Returns False when the client disconnected before the end. Either way `items` is closed,
    which stops the generation behind it.
    """
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    producer = asyncio.current_task()
    assert producer is not None
    pending: list[bytes] = []
    buffered = 0
    wake = asyncio.Event()
    room = asyncio.Event()
    finished = False
    disconnected = False

    async def write() -> None:
        nonlocal buffered
        while True:
            await wake.wait()
            wake.clear()
            if pending:
                data = pending[0] if len(pending) == 1 else b"".join(pending)
                pending.clear()
                buffered = 0
                room.set()
                await send({"type": "http.response.body", "body": data, "more_body": True})
            if finished and not pending:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return

    async def watch() -> None:
        nonlocal disconnected
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                producer.cancel()
                return

    writer = asyncio.create_task(write())
    watcher = asyncio.create_task(watch())
    try:
        async for item in items:
            chunk = encode(item)
            if chunk:
                pending.append(chunk)
                buffered += len(chunk)
                wake.set()
                if writer.done():
                    break  # the send failed: the client is gone
                if buffered > MAX_BUFFERED_BYTES:
                    room.clear()
                    await room.wait()
        finished = True
        wake.set()
        await writer
    except asyncio.CancelledError:
        if not disconnected:
            raise
        # Our own cancellation on disconnect: swallow it so the request ends cleanly.
        producer.uncancel()
    except (OSError, RuntimeError):
        # A failed send: the client is gone (servers raise OSError or a RuntimeError subclass).
        disconnected = True
    finally:
        for task in (watcher, writer):
            task.cancel()
        for task in (watcher, writer):
            with contextlib.suppress(asyncio.CancelledError, OSError, RuntimeError):
                await task
        await items.aclose()
    return not disconnected

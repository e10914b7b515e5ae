"""One request and its response, whatever server interface carried it.

Routes see an `Exchange`: the method, path and headers, the body, and two ways to answer (one
body, or a stream of items encoded as they come). `asgi.py` and `rsgi.py` adapt the two server
interfaces to it; the streaming logic they share lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Protocol, TypeVar

from modelport.core.alarms import alarms_for
from modelport.core.collect import Completion, collect_batches
from modelport.core.errors import PayloadTooLarge
from modelport.core.events import Event
from modelport.core.trace import current as current_trace
from modelport.http.client_limits import BodyDeadlines
from modelport.http.headers import Headers, security_headers

T = TypeVar("T")

JSON = "application/json"
SSE_HEADERS = (
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
    *security_headers("text/event-stream"),
)


class Exchange(Protocol):
    method: str
    path: str
    # Headers every response of this exchange carries besides its own (CORS), set by the app
    # before it routes; `()` until then.
    extra_headers: Headers
    # The response's status once it began (200 for a stream), 0 before.
    status: int

    @property
    def query(self) -> str:
        """The raw query string, without "?"."""

    @property
    def client(self) -> str:
        """The peer's IP address as the server saw it ("" when unknown, e.g. a Unix socket);
        the app decides whether to believe X-Forwarded-For (http/client_address.py)."""

    @property
    def responded(self) -> bool:
        """Whether the response has begun (after which an error can no longer be a status)."""

    def header(self, name: str) -> str | None:
        """A request header by lower-case name."""

    async def body(self, limit: int) -> bytes:
        """The whole request body; PayloadTooLarge beyond `limit` bytes."""

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = JSON,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None: ...

    async def stream(self, items: AsyncGenerator[T, None], encode: Callable[[T], bytes]) -> bool:
        """Send `items` as an SSE response; False if the client went away before the end."""

    async def disconnected(self) -> None:
        """Return when the client has gone away (call after the body was read)."""


def query_flag(exchange: Exchange, name: str) -> bool:
    """Whether the query string sets `name` to true (`?name=true` or `?name=1`)."""
    return any(part in (f"{name}=true", f"{name}=1") for part in exchange.query.split("&"))


async def read_limited(
    chunks: AsyncIterator[bytes], limit: int, deadlines: BodyDeadlines | None = None
) -> bytes:
    """Join a request body's chunks; PayloadTooLarge as soon as it passes `limit` bytes, and
    RequestTimeout (408) when it does not arrive within `deadlines`' allowance."""
    parts: list[bytes] = []
    size = 0
    if deadlines is None:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    read = deadlines.begin()
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
            parts.append(chunk)
            read.received = size
    except asyncio.CancelledError:
        if read.expired and read.task.uncancel() == 0:
            raise deadlines.error() from None
        raise
    finally:
        deadlines.end(read)
    return parts[0] if len(parts) == 1 else b"".join(parts)


# The status logs and metrics give a request whose client left before its answer ended (nginx's).
CLIENT_CLOSED = 499

# A whole answer that takes longer than this starts watching for its client going away; one
# that is quicker (most are) costs no watcher task, and no timer of its own (core/alarms.py).
WATCH_AFTER_S = 0.25


async def unless_gone(work: Awaitable[T], disconnected: Callable[[], Awaitable[None]]) -> T | None:
    """`work`'s result, or None when the client went away first: then `work` is cancelled
    (a request waiting for an upstream's first byte gives back its place at once). Work
    quicker than `WATCH_AFTER_S` (most) costs no watcher task."""
    task = asyncio.current_task()
    assert task is not None
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        await disconnected()
        gone = True
        task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(watch())

    loop = asyncio.get_running_loop()
    alarms = alarms_for(loop)
    alarms.set(start_watching, loop.time() + WATCH_AFTER_S, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
        trace = current_trace()
        if trace is not None:
            trace.fail("client_closed", CLIENT_CLOSED)
        return None
    finally:
        alarms.clear(start_watching)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def collect_whole(
    events: AsyncGenerator[list[Event], None], disconnected: Callable[[], Awaitable[None]]
) -> Completion | None:
    """`collect` for an answer sent whole, over its batches, closing them on every path (so the
    stage behind it settles at once, not when the generator is garbage-collected). A client
    that gives up stops the generation behind it, as a closed stream does: returns None then.
    Errors in the events are raised (after the stream was closed)."""

    async def collect() -> Completion:
        async with aclosing(events):
            return await collect_batches(events)

    return await unless_gone(collect(), disconnected)


async def pump(
    items: AsyncGenerator[T, None],
    encode: Callable[[T], bytes],
    write: Callable[[bytes], Awaitable[None]],
    finish: Callable[[], Awaitable[None]],
    disconnected: Callable[[], Awaitable[None]],
) -> bool:
    """Relay `items` to a response body until they end or the client goes away.

    Each item is encoded and written as it comes, one write per item: a stream whose items
    are batches (one per upstream read, `core/batches.py`) leaves in as few writes as the
    upstream's reads, and while a write is in flight the next read gathers what arrived
    meanwhile. The write is meant to be the backpressure (a client reading slower than the
    model writes holds the producer): under an ASGI server with flow control it is; under
    granian 2.8 it is not (its send resolves at once and buffers without bound until a release
    with granian PR #887), so there a stream is held in memory up to the answer's size (the
    metering stage's output limit); tests/e2e/test_stream_backpressure.py marks it. A stream
    still running after `WATCH_AFTER_S` also watches for the client going away and then
    cancels the producer
    (a client that leaves sooner is noticed at the next write). Either way `items` is
    closed, which stops the generation behind it. Returns False when the client went away
    first.
    """
    producer = asyncio.current_task()
    assert producer is not None
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        await disconnected()
        gone = True
        producer.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(watch())

    loop = asyncio.get_running_loop()
    alarms = alarms_for(loop)
    alarms.set(start_watching, loop.time() + WATCH_AFTER_S, start_watching)
    try:
        async for item in items:
            chunk = encode(item)
            if chunk:
                await write(chunk)
        await finish()
    except asyncio.CancelledError:
        if not gone:
            raise
        # Our own cancellation on disconnect: swallow it so the request ends cleanly.
        producer.uncancel()
    except (OSError, RuntimeError):
        # A failed write: the client is gone (servers raise OSError or a RuntimeError subclass).
        gone = True
    finally:
        alarms.clear(start_watching)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, RuntimeError):
                await watcher
        await items.aclose()
    if gone:
        trace = current_trace()
        if trace is not None:
            trace.fail("client_closed", CLIENT_CLOSED)
    return not gone

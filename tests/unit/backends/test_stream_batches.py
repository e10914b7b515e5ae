"""Events in batches: what one read of an upstream's body holds goes on as one batch, in the
same order as one event at a time, and every stage closes what it reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
import pytest_asyncio
from tests.fakes.burst_upstream import BurstUpstream, sse_stream

from modelport.backends import http1
from modelport.backends.base import BatchingBackend, CallContext
from modelport.backends.openai_compat import OpenAICompatEngine
from modelport.core.batches import batched, flat
from modelport.core.catalog import ModelCard, OpenAICompatBackend
from modelport.core.errors import UpstreamError
from modelport.core.events import Event, Start, Stop, TextDelta, Usage
from modelport.core.types import ChatRequest, Message, TextPart

CARD = ModelCard(id="test/burst", name="Burst", description="test card", context_length=32768)
TEXTS = [f"w{i} " for i in range(50)]


def request(**fields: object) -> ChatRequest:
    return ChatRequest(
        model=CARD.id,
        messages=(Message("user", (TextPart("hi"),)),),
        **fields,  # type: ignore[arg-type]
    )


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[BurstUpstream]:
    async with BurstUpstream() as server:
        yield server


@pytest_asyncio.fixture
async def engine(upstream: BurstUpstream) -> AsyncIterator[OpenAICompatEngine]:
    backend = OpenAICompatEngine(
        OpenAICompatBackend(url=upstream.base_url, timeout=5.0), CARD, api_key=None
    )
    await backend.start()
    yield backend
    await backend.aclose()


async def batches_of(engine: OpenAICompatEngine, req: ChatRequest) -> list[list[Event]]:
    return [batch async for batch in engine.stream_batches(req, CallContext("r", CARD))]


def expected(engine: OpenAICompatEngine) -> list[Event]:
    return [
        Start(CARD.id, engine.name),
        *(TextDelta(0, text) for text in TEXTS),
        Usage(5, 7),
        Stop("stop", "stop"),
    ]


@pytest.mark.asyncio
async def test_a_stream_sent_in_one_write_comes_as_start_then_one_batch(
    upstream: BurstUpstream, engine: OpenAICompatEngine
) -> None:
    upstream.events = sse_stream(TEXTS)
    assert isinstance(engine, BatchingBackend)
    batches = await batches_of(engine, request())
    # Start alone (the client's response begins before the first token), then the whole
    # read: every text, the usage and the finish.
    assert batches == [[Start(CARD.id, engine.name)], expected(engine)[1:]]
    one_by_one = [event async for event in engine.stream(request(), CallContext("r", CARD))]
    assert one_by_one == expected(engine)


@pytest.mark.asyncio
async def test_a_paced_stream_comes_in_several_batches_with_the_same_events(
    upstream: BurstUpstream, engine: OpenAICompatEngine
) -> None:
    upstream.events = sse_stream(TEXTS[:5])
    upstream.pause = 0.02
    batches = await batches_of(engine, request())
    assert len(batches) > 3
    assert all(batches)  # never an empty batch
    assert [event for batch in batches for event in batch] == [
        Start(CARD.id, engine.name),
        *(TextDelta(0, text) for text in TEXTS[:5]),
        Usage(5, 7),
        Stop("stop", "stop"),
    ]


@pytest.mark.parametrize("pause", [None, 0.02], ids=["one-write", "paced"])
@pytest.mark.asyncio
async def test_the_events_before_an_error_in_the_stream_still_come_out(
    upstream: BurstUpstream, engine: OpenAICompatEngine, pause: float | None
) -> None:
    upstream.events = sse_stream(["one", "two"], error=True)
    upstream.pause = pause
    seen: list[Event] = []
    with pytest.raises(UpstreamError):
        async for batch in engine.stream_batches(request(), CallContext("r", CARD)):
            seen += batch
    assert seen == [Start(CARD.id, engine.name), TextDelta(0, "one"), TextDelta(0, "two")]


@pytest.mark.asyncio
async def test_a_large_max_tokens_is_fitted_in_the_batched_form_too(
    upstream: BurstUpstream, engine: OpenAICompatEngine
) -> None:
    upstream.events = sse_stream(["x"])
    await batches_of(engine, request(max_output_tokens=1_000_000))
    sent = upstream.bodies[-1]["max_tokens"]
    assert 0 < sent < CARD.context_length


class Source:
    """An event stream that records whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    async def events(self) -> AsyncGenerator[Event, None]:
        try:
            for index in range(10):
                yield TextDelta(0, str(index))
                await asyncio.sleep(0)
        finally:
            self.closed = True

    async def batches(self) -> AsyncGenerator[list[Event], None]:
        try:
            for index in range(10):
                yield [TextDelta(0, str(index)), TextDelta(0, "+")]
                await asyncio.sleep(0)
        finally:
            self.closed = True


@pytest.mark.asyncio
async def test_batched_and_flat_keep_the_order_and_close_their_source_when_closed() -> None:
    source = Source()
    assert [b async for b in batched(source.events())] == [
        [TextDelta(0, str(i))] for i in range(10)
    ]
    source = Source()
    events = [e async for e in flat(source.batches())]
    assert events == [e for i in range(10) for e in (TextDelta(0, str(i)), TextDelta(0, "+"))]

    source = Source()
    stream = batched(source.events())
    await anext(stream)
    await stream.aclose()
    assert source.closed  # at once, not when garbage is collected
    source = Source()
    singles = flat(source.batches())
    await anext(singles)
    await singles.aclose()
    assert source.closed


@pytest.mark.asyncio
async def test_the_client_hands_over_everything_that_arrived_since_the_last_read() -> None:
    """Two reads of the socket that arrive while the consumer is busy come out as one piece
    (the next batch of events), not one per read."""
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
        await writer.drain()
        await release.wait()
        for piece in (b"3\r\ntwo\r\n", b"5\r\nthree\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)  # separate reads on the client's side
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = http1.Client()
    try:
        response = await client.send(client.prepare("POST", f"http://127.0.0.1:{port}/", {}), b"{}")
        assert await response.next_chunk() == b"one"
        release.set()
        await asyncio.sleep(0.2)  # busy elsewhere while both reads arrive
        assert await response.next_chunk() == b"twothree"
        assert await response.next_chunk() == b""
        response.release()
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()

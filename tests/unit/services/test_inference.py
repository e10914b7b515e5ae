"""The generation path: model resolution, routing and failover, and the stream guarantees the
service adds on top of any backend."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import pytest

from modelport.backends.base import CallContext, Route
from modelport.core.catalog import Catalog, ModelCard, OpenAICompatBackend
from modelport.core.collect import collect
from modelport.core.errors import (
    BackendUnavailable,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    UpstreamError,
)
from modelport.core.events import Error, Event, Start, Stop, TextDelta, Usage
from modelport.core.invariants import check_stream
from modelport.core.types import ChatRequest, Message, TextPart, Tool
from modelport.services.inference import Generation, InferenceService

CONFIG = OpenAICompatBackend(url="http://127.0.0.1:9/v1")


def card(model_id: str, *, tools: bool = False) -> ModelCard:
    return ModelCard(
        id=model_id,
        name=model_id,
        description="d",
        context_length=100,
        supported_parameters=("tools",) if tools else (),
        backends=(CONFIG,),
    )


def request(model: str, **fields: object) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=(Message("user", (TextPart("hi"),)),),
        **fields,  # type: ignore[arg-type]
    )


async def start(service: InferenceService, req: ChatRequest) -> Generation:
    """What the metering stage does around inference: prepare, then start."""
    card, prepared = service.prepare(req)
    return await service.start(prepared, CallContext("req-1", card))


class ScriptedBackend:
    """A test double implementing the Backend protocol: replays events, or raises."""

    def __init__(self, name: str, events: Sequence[Event | Exception]) -> None:
        self.name = name
        self.events = events
        self.calls = 0
        self.closed = False

    async def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]:
        self.calls += 1
        try:
            for item in self.events:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed = True


GOOD: list[Event | Exception] = [
    Start("acme/m", "good"),
    TextDelta(0, "ok"),
    Usage(1, 1),
    Stop("stop"),
]


def service(*routes: tuple[ScriptedBackend, int], tools: bool = False) -> InferenceService:
    catalog = Catalog(models=(card("acme/m", tools=tools), card("acme/empty")))
    return InferenceService(
        catalog, {"acme/m": [Route(backend, priority=priority) for backend, priority in routes]}
    )


async def events_of(svc: InferenceService, req: ChatRequest) -> list[Event]:
    generation = await start(svc, req)
    return [event async for event in generation.events]


@pytest.mark.asyncio
async def test_unknown_model_and_bare_names() -> None:
    svc = service((ScriptedBackend("good", GOOD), 0))
    with pytest.raises(ModelNotFound) as info:
        await start(svc, request("acme/nope"))
    assert info.value.param == "model"
    generation = await start(svc, request("m"))
    assert generation.card.id == "acme/m"
    assert (await collect(generation.events)).text == "ok"


@pytest.mark.asyncio
async def test_a_model_without_backends_says_how_to_configure_one() -> None:
    with pytest.raises(BackendUnavailable, match=r"MODELPORT_CONFIG.*docs/backends\.md") as info:
        await start(service(), request("acme/empty"))
    assert info.value.status == 503


@pytest.mark.asyncio
async def test_failover_before_the_first_event() -> None:
    broken = ScriptedBackend("broken", [UpstreamError("down")])
    good = ScriptedBackend("good", GOOD)
    svc = service((good, 1), (broken, 0))
    events = await events_of(svc, request("acme/m"))
    check_stream(events)
    assert broken.calls == 1
    assert broken.closed
    assert good.calls == 1


@pytest.mark.asyncio
async def test_all_backends_failing_raises_the_last_error() -> None:
    svc = service((ScriptedBackend("a", [UpstreamError("a down")]), 0))
    with pytest.raises(UpstreamError, match="a down"):
        await start(svc, request("acme/m"))


@pytest.mark.asyncio
async def test_a_client_error_is_not_retried_elsewhere() -> None:
    first = ScriptedBackend("first", [InvalidRequest("bad", param="stop")])
    second = ScriptedBackend("second", GOOD)
    with pytest.raises(InvalidRequest):
        await start(service((first, 0), (second, 1)), request("acme/m"))
    assert second.calls == 0


@pytest.mark.asyncio
async def test_failures_after_start_become_a_final_error_event() -> None:
    for failure in (UpstreamError("cut"), RuntimeError("bug")):
        backend = ScriptedBackend("b", [Start("acme/m", "b"), TextDelta(0, "par"), failure])
        events = await events_of(service((backend, 0)), request("acme/m"))
        check_stream(events)
        last = events[-1]
        assert isinstance(last, Error)
        assert isinstance(last.error, UpstreamError | InternalError)
        assert "bug" not in last.error.message  # internals are not leaked to clients


@pytest.mark.asyncio
async def test_a_stream_that_ends_without_stop_still_finishes() -> None:
    backend = ScriptedBackend("b", [Start("acme/m", "b"), TextDelta(0, "x")])
    events = await events_of(service((backend, 0)), request("acme/m"))
    check_stream(events)
    assert isinstance(events[-1], Error)


@pytest.mark.asyncio
async def test_a_backend_error_event_is_not_doubled() -> None:
    backend = ScriptedBackend("b", [Start("acme/m", "b"), Error(UpstreamError("x"))])
    events = await events_of(service((backend, 0)), request("acme/m"))
    check_stream(events)
    assert sum(isinstance(event, Error) for event in events) == 1


@pytest.mark.asyncio
async def test_closing_early_closes_the_backend() -> None:
    backend = ScriptedBackend("b", [Start("acme/m", "b"), *[TextDelta(0, "x")] * 100, Stop("stop")])
    generation = await start(service((backend, 0)), request("acme/m"))
    async for event in generation.events:
        if isinstance(event, TextDelta):
            break
    await generation.events.aclose()
    assert backend.closed


@pytest.mark.asyncio
async def test_tools_need_a_model_that_supports_them() -> None:
    tools = (Tool(name="f"),)
    with pytest.raises(InvalidRequest) as info:
        await start(service((ScriptedBackend("b", GOOD), 0)), request("acme/m", tools=tools))
    assert info.value.param == "tools"
    generation = await start(
        service((ScriptedBackend("b", GOOD), 0), tools=True), request("acme/m", tools=tools)
    )
    assert (await collect(generation.events)).text == "ok"

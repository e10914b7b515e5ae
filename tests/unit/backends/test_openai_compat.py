"""The OpenAI-compatible backend against the scripted fake upstream, over real HTTP."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script, ToolCallScript

from modelport.backends.base import CallContext
from modelport.backends.openai_compat import OpenAICompatEngine
from modelport.core.catalog import ConfigError, ModelCard, OpenAICompatBackend
from modelport.core.collect import collect
from modelport.core.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelportError,
    Overloaded,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from modelport.core.events import Event, Start, TextDelta, Usage
from modelport.core.invariants import check_stream
from modelport.core.types import ChatRequest, Message, Sampling, TextPart, ToolCallPart

SECRET = "sk-upstream-secret-0123456789"
CARD = ModelCard(id="qwen/qwen3-8b", name="Qwen3 8B", description="test card", context_length=32768)


def request(text: str = "hello there", **fields: Any) -> ChatRequest:
    return ChatRequest(model=CARD.id, messages=(Message("user", (TextPart(text),)),), **fields)


def context() -> CallContext:
    return CallContext("req-1", CARD)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeOpenAIUpstream]:
    async with FakeOpenAIUpstream() as upstream:
        yield upstream


class Engines:
    """Builds started engines and closes them all at the end of a test."""

    def __init__(self) -> None:
        self.started: list[OpenAICompatEngine] = []

    async def __call__(
        self, url: str, *, api_key: str | None = SECRET, **config: Any
    ) -> OpenAICompatEngine:
        settings: dict[str, Any] = {"dialect": "vllm", "timeout": 5.0, "connect_timeout": 1.0}
        settings.update(config)
        engine = OpenAICompatEngine(OpenAICompatBackend(url=url, **settings), CARD, api_key=api_key)
        await engine.start()
        self.started.append(engine)
        return engine


@pytest_asyncio.fixture
async def engines() -> AsyncIterator[Engines]:
    made = Engines()
    yield made
    for engine in made.started:
        await engine.aclose()


async def events_of(engine: OpenAICompatEngine, req: ChatRequest | None = None) -> list[Event]:
    return [event async for event in engine.stream(req or request(), context())]


@pytest.mark.asyncio
async def test_stream_keeps_the_invariants_and_collects_to_the_script(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    fake.enqueue(Script(reasoning=["Think", "ing."], text=["Hel", "lo", "!"], usage=(11, 5, 2, 4)))
    engine = await engines(fake.base_url)
    ctx = context()
    events = [event async for event in engine.stream(request(), ctx)]
    check_stream(events)
    assert events[0] == Start(model=CARD.id, backend=engine.name)
    completion = await collect(_replay(events))
    assert completion.reasoning == "Thinking."
    assert completion.text == "Hello!"
    assert completion.usage == Usage(11, 5, reasoning_tokens=2, cached_tokens=4)
    assert (completion.finish_reason, completion.native_finish_reason) == ("stop", "stop")
    # Usage travels only as an event: one, right before Stop.
    assert [e for e in events if isinstance(e, Usage)] == [events[-2]]
    assert events[-2] == Usage(11, 5, reasoning_tokens=2, cached_tokens=4)


@pytest.mark.asyncio
async def test_a_whole_answer_comes_from_one_json_body_with_the_same_events(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    script = Script(
        reasoning=["Think", "ing."],
        text=["Hel", "lo", "!"],
        tool_calls=[ToolCallScript("f", ['{"a": 1}'], id="call_1")],
        usage=(11, 5, 2, 4),
    )
    fake.enqueue(script, script)
    engine = await engines(fake.base_url)
    streamed = [event async for event in engine.stream(request(), context())]
    whole_ctx = CallContext("req-whole", CARD, incremental=False)
    whole = [event async for event in engine.stream(request(), whole_ctx)]
    check_stream(whole)
    assert fake.requests[-2].body["stream"] is True
    assert fake.requests[-1].body["stream"] is False
    assert "stream_options" not in fake.requests[-1].body
    assert await collect(_replay(whole)) == await collect(_replay(streamed))
    assert [e for e in whole if isinstance(e, Usage)] == [
        Usage(11, 5, reasoning_tokens=2, cached_tokens=4)
    ]


async def _replay(events: list[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


@pytest.mark.asyncio
async def test_the_upstream_receives_a_usage_stream_for_its_model_with_credentials(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    engine = await engines(
        fake.base_url + "/",
        upstream_model="Qwen/Qwen3-8B",
        headers={"X-Tenant": "blue"},
    )
    await events_of(engine, request("ping", sampling=Sampling(temperature=0.0, top_k=20)))
    [received] = fake.requests
    assert received.path == "/v1/chat/completions"
    assert received.body["stream"] is True
    assert received.body["stream_options"] == {"include_usage": True}
    assert received.body["model"] == "Qwen/Qwen3-8B"
    assert received.body["messages"] == [{"role": "user", "content": "ping"}]
    assert (received.body["temperature"], received.body["top_k"]) == (0.0, 20)
    assert received.headers["Authorization"] == f"Bearer {SECRET}"
    assert received.headers["X-Tenant"] == "blue"
    assert received.headers["Content-Type"] == "application/json"


@pytest.mark.asyncio
async def test_without_a_key_no_authorization_is_sent_and_the_card_id_is_the_model(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    engine = await engines(fake.base_url, api_key=None)
    assert engine.name == f"openai_compat:127.0.0.1:{fake.port}"
    await events_of(engine)
    assert "Authorization" not in fake.requests[0].headers
    assert fake.requests[0].body["model"] == CARD.id


@pytest.mark.asyncio
async def test_default_echo_answer_and_a_configured_name(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    engine = await engines(fake.base_url, name="gpu-box-1")
    completion = await collect(engine.stream(request("one two three"), context()))
    assert completion.text == "Echo: one two three"
    assert completion.usage == Usage(3, 4)
    assert completion.backend == "gpu-box-1"


@pytest.mark.asyncio
async def test_tool_calls_stream_through(fake: FakeOpenAIUpstream, engines: Engines) -> None:
    fake.enqueue(
        Script(
            text=["Let me check."],
            tool_calls=[
                ToolCallScript("get_weather", ['{"city":', ' "Paris"}'], id="call_w"),
                ToolCallScript("get_time", ["{}"]),  # no id: the backend makes one
            ],
            usage=(20, 9),
        )
    )
    engine = await engines(fake.base_url)
    events = await events_of(engine)
    check_stream(events)
    completion = await collect(_replay(events))
    assert completion.text == "Let me check."
    assert completion.tool_calls[0] == ToolCallPart("call_w", "get_weather", '{"city": "Paris"}')
    second = completion.tool_calls[1]
    assert (second.name, second.arguments) == ("get_time", "{}")
    assert second.id.startswith("call_")
    assert completion.finish_reason == "tool_calls"


@pytest.mark.asyncio
async def test_crlf_keepalives_and_vllm_stop_reason(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    fake.enqueue(Script(text=["a", "b"], crlf=True, keepalives=True, stop_reason="###"))
    engine = await engines(fake.base_url)
    completion = await collect(engine.stream(request(), context()))
    assert (completion.text, completion.native_finish_reason) == ("ab", "###")


@pytest.mark.asyncio
async def test_an_upstream_that_ignores_stream_and_answers_json(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    fake.enqueue(Script(text=["whole ", "answer"], reasoning=["r"], json_body=True, usage=(4, 3)))
    engine = await engines(fake.base_url)
    events = await events_of(engine)
    check_stream(events)
    completion = await collect(_replay(events))
    assert (completion.text, completion.reasoning, completion.usage) == (
        "whole answer",
        "r",
        Usage(4, 3),
    )


@pytest.mark.asyncio
async def test_a_finished_stream_returns_its_connection_to_the_pool(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    # The end of the HTTP body comes a moment after `[DONE]`: the backend waits for it rather
    # than dropping a connection that could serve the next request.
    fake.enqueue(Script(text=["a"], linger_after_done=0.05))
    engine = await engines(fake.base_url)
    await events_of(engine)
    await events_of(engine)
    assert fake.requests[0].peer == fake.requests[1].peer


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "fragment", "retry_after"),
    [
        (400, {"error": {"message": "n must be 1"}}, {}, InvalidRequest, "n must be 1", None),
        (
            400,
            {"object": "error", "message": "This model's maximum context length is 32768 tokens."},
            {},
            ContextLengthExceeded,
            "maximum context length",
            None,
        ),
        (401, {"error": {"message": "bad key"}}, {}, UpstreamError, "credentials", None),
        (404, {"error": {"message": "no such model"}}, {}, UpstreamError, "this model", None),
        (408, "timeout", {}, UpstreamTimeout, "HTTP 408", None),
        (429, {"error": {"message": "slow"}}, {"Retry-After": "3"}, RateLimited, "HTTP 429", 3.0),
        (503, {"error": {"message": "full"}}, {"Retry-After": "2"}, Overloaded, "HTTP 503", 2.0),
        (500, {"error": {"message": "boom"}}, {}, UpstreamError, "failed (HTTP 500)", None),
        (504, "", {}, UpstreamTimeout, "HTTP 504", None),
    ],
)
@pytest.mark.asyncio
async def test_http_errors_raise_before_any_event(
    fake: FakeOpenAIUpstream,
    engines: Engines,
    status: int,
    body: Any,
    headers: dict[str, str],
    kind: type[ModelportError],
    fragment: str,
    retry_after: float | None,
) -> None:
    fake.enqueue(Script(status=status, error_body=body, headers=headers))
    engine = await engines(fake.base_url)
    stream = engine.stream(request(), context())
    with pytest.raises(kind) as info:
        await anext(stream)  # nothing was yielded: routing may still fail over
    assert type(info.value) is kind
    assert fragment in info.value.message
    assert info.value.retry_after == retry_after
    # The request id for the client; the upstream's address only in the detail (the log).
    assert info.value.request_id == "req-1"
    assert fake.base_url not in info.value.message
    assert info.value.detail is not None and fake.base_url in info.value.detail


@pytest.mark.asyncio
async def test_an_upstream_that_echoes_the_key_does_not_leak_it(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    body = {"error": {"message": f"Incorrect API key provided: {SECRET}"}}
    fake.enqueue(Script(status=401, error_body=body))
    engine = await engines(fake.base_url)
    with pytest.raises(UpstreamError) as info:
        await events_of(engine)
    assert SECRET not in info.value.message
    assert SECRET not in str(info.value)
    assert info.value.detail is not None
    assert SECRET not in info.value.detail and "***" in info.value.detail


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.asyncio
async def test_connection_refused_names_the_upstream_in_the_detail_only(engines: Engines) -> None:
    # The message goes to the client; the detail (with the upstream's address) goes only
    # to the operator's log line, written once by the routing stage.
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    engine = await engines(url)
    with pytest.raises(UpstreamError) as info:
        await events_of(engine)
    assert info.value.message == "cannot reach the upstream model server"
    assert f"cannot reach upstream {url}" in (info.value.detail or "")


@pytest.mark.asyncio
async def test_a_slow_upstream_times_out(fake: FakeOpenAIUpstream, engines: Engines) -> None:
    fake.enqueue(Script(first_byte_delay=3.0))
    engine = await engines(fake.base_url, timeout=0.2)
    began = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await events_of(engine)
    assert time.monotonic() - began < 1.0


@pytest.mark.asyncio
async def test_a_stream_that_stalls_mid_way_times_out(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    fake.on("STALL", Script(text=["a", "b"], delay=0.0))
    fake.enqueue(Script(text=["x"] * 5, delay=3.0))
    engine = await engines(fake.base_url, timeout=0.3)
    assert (await collect(engine.stream(request("STALL"), context()))).text == "ab"
    with pytest.raises(UpstreamTimeout):
        await events_of(engine)


@pytest.mark.asyncio
async def test_read_timeout_abandons_a_stalled_stream_long_before_the_whole_timeout(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    # The answer's text arrives but not its finish, `[DONE]` or the end of the body, then the
    # upstream goes silent for far longer than read_timeout but well within timeout. (Silent
    # after its finish, it would have lost only its usage: tests/e2e/test_faults.py.)
    fake.enqueue(
        Script(
            text=["one", "two"], omit_finish_reason=True, send_done=False, linger_after_done=10.0
        )
    )
    engine = await engines(fake.base_url, read_timeout=0.3, timeout=30.0)
    seen: list[Event] = []
    began = time.monotonic()
    with pytest.raises(UpstreamTimeout, match=r"sent nothing for 0\.3s"):
        async for event in engine.stream(request(), context()):
            seen.append(event)
    assert time.monotonic() - began < 2.0
    assert seen == [Start(CARD.id, engine.name), TextDelta(0, "one"), TextDelta(0, "two")]


@pytest.mark.asyncio
async def test_read_timeout_bounds_each_silence_not_the_whole_response(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    # Five chunks 0.2 s apart: the response takes about 1 s, more than read_timeout in all.
    fake.enqueue(Script(text=["a", "b"], delay=0.2))
    engine = await engines(fake.base_url, read_timeout=0.6, timeout=30.0)
    began = time.monotonic()
    assert (await collect(engine.stream(request(), context()))).text == "ab"
    assert time.monotonic() - began > 0.6


# Written back to back, the chunks and the error arrive in one read (one batch of events);
# paced, in one read each.
@pytest.mark.parametrize("delay", [0.0, 0.05], ids=["one-read", "paced"])
@pytest.mark.asyncio
async def test_an_error_inside_the_stream_is_raised_after_the_partial_answer(
    fake: FakeOpenAIUpstream, engines: Engines, delay: float
) -> None:
    fake.enqueue(Script(text=["one", "two", "three"], error_after=3, delay=delay))
    engine = await engines(fake.base_url)
    seen: list[Event] = []

    async def consume() -> None:
        async for event in engine.stream(request(), context()):
            seen.append(event)

    with pytest.raises(UpstreamError) as info:
        await consume()
    assert info.value.detail is not None and "the engine crashed" in info.value.detail
    assert seen == [Start(CARD.id, engine.name), TextDelta(0, "one"), TextDelta(0, "two")]


@pytest.mark.asyncio
async def test_a_dropped_connection_mid_stream(fake: FakeOpenAIUpstream, engines: Engines) -> None:
    fake.enqueue(Script(text=["one", "two", "three"], drop_after=2))
    engine = await engines(fake.base_url)
    with pytest.raises(UpstreamError, match="closed the connection mid-response"):
        await events_of(engine)


@pytest.mark.asyncio
async def test_a_stream_without_a_finish_reason_is_an_error(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    fake.enqueue(Script(text=["half"], omit_finish_reason=True))
    engine = await engines(fake.base_url)
    with pytest.raises(UpstreamError, match="without a finish reason"):
        await events_of(engine)


@pytest.mark.asyncio
async def test_closing_the_stream_early_disconnects_the_upstream(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    fake.enqueue(Script(text=[f"w{i} " for i in range(200)], delay=0.02))
    engine = await engines(fake.base_url)
    stream = engine.stream(request(), context())
    assert isinstance(await anext(stream), Start)
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()
    assert await fake.wait_disconnected()
    assert not fake.requests[0].completed


@pytest.mark.asyncio
async def test_a_client_that_leaves_before_stop_has_the_usage_event_already(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    fake.enqueue(Script(text=["a", "b"], usage=(7, 2)))
    engine = await engines(fake.base_url)
    stream = engine.stream(request(), context())
    usage = None
    async for event in stream:
        if isinstance(event, Usage):
            usage = event
            break
    await stream.aclose()
    assert usage == Usage(7, 2)
    assert not hasattr(context(), "usage")  # nothing flows back through the context


@pytest.mark.asyncio
async def test_the_fake_also_serves_from_its_own_thread(engines: Engines) -> None:
    upstream = FakeOpenAIUpstream()
    url = upstream.start_in_thread()
    try:
        upstream.on("MARK", Script(text=["from ", "a thread"]))
        engine = await engines(url)
        completion = await collect(engine.stream(request("MARK"), context()))
        assert completion.text == "from a thread"
        # The fake's thread marks the answer complete just after the last byte leaves it, which
        # can be a moment after the backend has read that byte.
        for _ in range(100):  # up to 1 s
            if upstream.requests[0].completed:
                break
            await asyncio.sleep(0.01)
        assert upstream.requests[0].completed
        async with aiohttp.ClientSession() as session, session.get(url + "/models") as models:
            listed = await models.json()
        assert [model["id"] for model in listed["data"]] == ["fake-model"]
    finally:
        upstream.stop_thread()


@pytest.mark.parametrize(
    ("dialect", "setting", "method"),
    [
        ("vllm", "auto", "parameter"),
        ("sglang", "auto", "parameter"),
        ("llamacpp_server", "auto", "parameter"),
        ("generic", "auto", "two_pass"),
        ("raw", "auto", "two_pass"),
        ("ollama", "auto", "off"),  # its /completions wraps the prompt in the template
        ("vllm", "two_pass", "two_pass"),  # e.g. vLLM started without a reasoning config
        ("vllm", "off", "off"),
    ],
)
def test_how_each_dialect_enforces_a_thinking_budget(
    dialect: str, setting: str, method: str
) -> None:
    config = OpenAICompatBackend(
        url="http://127.0.0.1:9/v1",
        dialect=dialect,  # type: ignore[arg-type]
        thinking_budget=setting,  # type: ignore[arg-type]
    )
    engine = OpenAICompatEngine(
        config, ModelCard(id="m", name="m", description="", context_length=8), api_key=None
    )
    assert engine._budget == method


@pytest.mark.parametrize(("dialect", "setting"), [("ollama", "two_pass"), ("generic", "parameter")])
def test_a_budget_method_the_dialect_lacks_is_a_configuration_error(
    dialect: str, setting: str
) -> None:
    config = OpenAICompatBackend(
        url="http://127.0.0.1:9/v1",
        dialect=dialect,  # type: ignore[arg-type]
        thinking_budget=setting,  # type: ignore[arg-type]
    )
    with pytest.raises(ConfigError, match="thinking_budget"):
        OpenAICompatEngine(
            config, ModelCard(id="m", name="m", description="", context_length=8), api_key=None
        )


@pytest.mark.asyncio
async def test_a_large_max_tokens_leaves_room_for_the_prompt(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    # Engines refuse prompt + max_tokens beyond their context: a limit above half the
    # context is lowered to what the prompt leaves (estimated here: no tokenizer for this
    # model), small ones are sent as they are.
    engine = await engines(fake.base_url)
    context = CARD.context_length
    prompt = "word " * (context // 2)  # about half the context in tokens, estimated
    await events_of(engine, request(prompt, max_output_tokens=context))
    sent = fake.requests[-1].body["max_tokens"]
    assert 0 < sent < context - context // 4
    await events_of(engine, request("short", max_output_tokens=context - 100))
    assert fake.requests[-1].body["max_tokens"] > context - 200
    await events_of(engine, request(prompt, max_output_tokens=10))
    assert fake.requests[-1].body["max_tokens"] == 10

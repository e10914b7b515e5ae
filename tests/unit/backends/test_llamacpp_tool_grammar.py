"""tool_choice "required" / named and response_format on the local engine are enforced by a
grammar, after the think block a Qwen3 model may write first.

The model is the tiny random-weight Qwen3 of tests/support/qwen3_gguf.py: left alone it writes
noise, so every well-formed tool call and every schema-valid argument below is the grammar's
doing. Greedy sampling keeps each run the same.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import msgspec
import pytest
from tests.support.qwen3_gguf import TEMPLATE_PATH, TOKEN_IDS, cached_qwen3_gguf

from modelport.backends.base import CallContext
from modelport.backends.llamacpp import LlamaCppEngine
from modelport.backends.llamacpp.output_grammar import output_grammar
from modelport.core.catalog import LlamaCppBackend, ModelCard
from modelport.core.collect import Completion, collect
from modelport.core.errors import InvalidRequest, MalformedModelOutput
from modelport.core.events import Error, Event, ReasoningDelta, Stop, ToolCallDelta, ToolCallStart
from modelport.core.invariants import check_stream
from modelport.core.types import (
    ChatRequest,
    Message,
    Reasoning,
    ResponseFormat,
    Sampling,
    TextPart,
    Tool,
    ToolChoice,
)

pytestmark = pytest.mark.engine

MODEL_ID = "test/qwen3-tiny"
WEATHER = Tool(
    name="get_weather",
    parameters={
        "type": "object",
        "properties": {
            "city": {"enum": ["Paris", "Rome", "北京"]},
            "days": {"type": "integer"},
            "metric": {"type": "boolean"},
        },
        "required": ["city", "days"],
        "additionalProperties": False,
    },
)
SEARCH = Tool(
    name="search",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string", "maxLength": 6}},
        "required": ["query"],
        "additionalProperties": False,
    },
)
# A schema the grammar cannot enforce exactly (a numeric bound): still a JSON-shaped call.
BOUNDED = Tool(
    name="set_volume",
    parameters={
        "type": "object",
        "properties": {"level": {"type": "integer", "minimum": 0, "maximum": 10}},
        "required": ["level"],
    },
)
# Ends the turn as soon as the grammar lets it; keeps the random model from closing a think
# block on its own (the budget does) and makes it open one when it may.
END_EARLY = {
    TOKEN_IDS["<|im_end|>"]: 100.0,
    TOKEN_IDS["</tool_call>"]: 50.0,  # one token, as a trained model writes it
}
THINK_THEN_BUDGET = {**END_EARLY, TOKEN_IDS["<think>"]: 100.0, TOKEN_IDS["</think>"]: -100.0}


REQUIRED = ToolChoice("required")


def card(**changes: object) -> ModelCard:
    base = ModelCard(
        id=MODEL_ID,
        name="Qwen3 tiny (random weights)",
        description="",
        context_length=4096,
        thinking="hybrid",
        tool_format="qwen3_json",
    )
    return msgspec.structs.replace(base, **changes)


def chat(
    *,
    tools: tuple[Tool, ...] = (WEATHER, SEARCH),
    choice: ToolChoice = REQUIRED,
    max_tokens: int = 120,
    bias: dict[int, float] | None = None,
    **fields: object,
) -> ChatRequest:
    return ChatRequest(
        model=MODEL_ID,
        messages=(Message("user", (TextPart("What is the weather like?"),)),),
        max_output_tokens=max_tokens,
        sampling=Sampling(temperature=0, logit_bias=bias or END_EARLY),
        tools=tools,
        tool_choice=choice,
        **fields,  # type: ignore[arg-type]
    )


THINKING_OFF = Reasoning(enabled=False)


@pytest.fixture(scope="session")
def qwen3_gguf(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)
    directory = cache.mkdir("qwen3-gguf") if cache is not None else tmp_path_factory.mktemp("q3")
    return cached_qwen3_gguf(directory)


def running(engine: LlamaCppEngine) -> Iterator[LlamaCppEngine]:
    asyncio.run(engine.start())
    try:
        yield engine
    finally:
        asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def hybrid(qwen3_gguf: Path) -> Iterator[LlamaCppEngine]:
    yield from running(
        LlamaCppEngine(LlamaCppBackend(path=str(qwen3_gguf)), card(), default_threads=1)
    )


@pytest.fixture(scope="module")
def coder(qwen3_gguf: Path) -> Iterator[LlamaCppEngine]:
    coder_card = card(thinking="none", tool_format="qwen3_coder_xml")
    yield from running(
        LlamaCppEngine(LlamaCppBackend(path=str(qwen3_gguf)), coder_card, default_threads=1)
    )


@pytest.fixture(scope="module")
def thinking_2507(qwen3_gguf: Path) -> Iterator[LlamaCppEngine]:
    # Thinking-2507's template opens the think block in the prompt.
    template = TEMPLATE_PATH.read_text(encoding="utf-8") + "{{- '<think>\\n' }}"
    backend = LlamaCppBackend(path=str(qwen3_gguf), chat_template=template)
    yield from running(LlamaCppEngine(backend, card(thinking="always"), default_threads=1))


def events_of(engine: LlamaCppEngine, req: ChatRequest) -> list[Event]:
    async def run() -> list[Event]:
        return [event async for event in engine.stream(req, CallContext("req", engine.card))]

    events = asyncio.run(run())
    check_stream(events)
    return events


def complete(engine: LlamaCppEngine, req: ChatRequest) -> Completion:
    return asyncio.run(collect(engine.stream(req, CallContext("req", engine.card))))


def assert_valid_calls(completion: Completion, tools: tuple[Tool, ...]) -> None:
    assert completion.tool_calls, completion
    schemas = {tool.name: tool.parameters for tool in tools}
    for call in completion.tool_calls:
        assert call.name in schemas
        jsonschema.validate(json.loads(call.arguments), schemas[call.name])


def test_required_makes_the_model_call_one_of_the_tools(hybrid: LlamaCppEngine) -> None:
    completion = complete(hybrid, chat(reasoning=THINKING_OFF, parallel_tool_calls=False))
    assert completion.finish_reason == "tool_calls"
    assert len(completion.tool_calls) == 1
    assert completion.text is None
    assert_valid_calls(completion, (WEATHER, SEARCH))


@pytest.mark.parametrize("name", ["get_weather", "search"])
def test_a_named_tool_is_the_one_called(hybrid: LlamaCppEngine, name: str) -> None:
    req = chat(choice=ToolChoice("named", name), reasoning=THINKING_OFF)
    completion = complete(hybrid, req)
    assert completion.finish_reason == "tool_calls"
    assert [call.name for call in completion.tool_calls] == [name]
    assert_valid_calls(completion, (WEATHER, SEARCH))


def test_parallel_calls_are_allowed_and_each_is_valid(hybrid: LlamaCppEngine) -> None:
    # Without the end-of-turn bias the random model goes on after the first call: the grammar
    # lets it write more calls, each complete and valid, or end the turn.
    req = chat(choice=ToolChoice("named", "get_weather"), bias={}, reasoning=THINKING_OFF)
    completion = complete(hybrid, req)
    assert completion.finish_reason in ("tool_calls", "length")
    if completion.finish_reason == "tool_calls":
        assert_valid_calls(completion, (WEATHER,))


def test_an_unenforceable_schema_still_shapes_the_call(hybrid: LlamaCppEngine) -> None:
    # The numeric bound is not in the grammar (the schema without it is), so the model may
    # break it: the call is well formed, and one out of bounds is reported as an error by the
    # schema check, never passed on.
    events = events_of(hybrid, chat(tools=(BOUNDED,), reasoning=THINKING_OFF))
    start = next(event for event in events if isinstance(event, ToolCallStart))
    assert start.name == "set_volume"
    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    level = json.loads(arguments)["level"]
    assert isinstance(level, int)
    last = events[-1]
    if 0 <= level <= 10:
        assert isinstance(last, Stop) and last.finish_reason == "tool_calls"
    else:
        assert isinstance(last, Error) and isinstance(last.error, MalformedModelOutput)


def test_the_model_thinks_first_and_then_calls(hybrid: LlamaCppEngine) -> None:
    # Thinking mode: the grammar allows a think block before the call. The budget closes it
    # (the engine writes the end of the block) and the call follows under the answer grammar.
    req = chat(bias=THINK_THEN_BUDGET, reasoning=Reasoning(max_tokens=4))
    events = events_of(hybrid, req)
    kinds = [type(event).__name__ for event in events]
    assert "ReasoningDelta" in kinds and "ToolCallStart" in kinds
    last_reasoning = max(i for i, e in enumerate(events) if isinstance(e, ReasoningDelta))
    first_call = min(i for i, e in enumerate(events) if isinstance(e, ToolCallStart))
    assert last_reasoning < first_call
    assert_valid_calls(complete(hybrid, req), (WEATHER, SEARCH))


def test_thinking_2507_closes_its_open_block_then_calls(thinking_2507: LlamaCppEngine) -> None:
    req = chat(
        choice=ToolChoice("named", "search"),
        bias=THINK_THEN_BUDGET,
        reasoning=Reasoning(max_tokens=3),
    )
    completion = complete(thinking_2507, req)
    assert completion.reasoning
    assert "</think>" not in completion.reasoning
    assert [call.name for call in completion.tool_calls] == ["search"]
    assert_valid_calls(completion, (SEARCH,))


def test_coder_calls_in_its_xml_format_with_typed_values(coder: LlamaCppEngine) -> None:
    req = chat(tools=(WEATHER,), choice=ToolChoice("named", "get_weather"))
    completion = complete(coder, req)
    assert completion.finish_reason == "tool_calls"
    (call,) = completion.tool_calls
    arguments = json.loads(call.arguments)
    jsonschema.validate(arguments, WEATHER.parameters)
    assert isinstance(arguments["days"], int)  # coerced from the XML text by the parser


def test_response_format_after_a_think_block(hybrid: LlamaCppEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    req = chat(
        tools=(),
        choice=ToolChoice("auto"),
        bias=THINK_THEN_BUDGET,
        reasoning=Reasoning(max_tokens=3),
        response_format=ResponseFormat("json_schema", schema=schema),
    )
    completion = complete(hybrid, req)
    assert completion.reasoning
    assert completion.text is not None
    jsonschema.validate(json.loads(completion.text), schema)


def test_auto_and_none_leave_the_answer_free() -> None:
    for choice in (ToolChoice("auto"), ToolChoice("none")):
        grammar = output_grammar(chat(choice=choice), tool_format="qwen3_json", thinking="open")
        assert grammar.first is None and grammar.after_think is None


def test_a_card_without_a_tool_format_is_not_constrained() -> None:
    grammar = output_grammar(chat(), tool_format="none", thinking="off")
    assert grammar.first is None


def test_naming_a_tool_that_is_not_offered_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as caught:
        output_grammar(
            chat(choice=ToolChoice("named", "nope")), tool_format="qwen3_json", thinking="off"
        )
    assert caught.value.param == "tool_choice"

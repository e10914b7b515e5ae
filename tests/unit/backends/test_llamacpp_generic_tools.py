"""Tools on a model whose chat template knows none (`tool_format = "generic"`), on the real
SmolLM2: the tools reach the prompt, every answer runs under a grammar (a forced call is one
well-formed call; "auto" is a call or text without the call tag), and a schema beyond the
grammar's bounds shapes the call loosely instead of refusing the request."""

from __future__ import annotations

import json
from collections.abc import Iterator

import msgspec
import pytest
from tests.unit.backends.test_llamacpp import MODEL, complete, running

from modelport.backends.llamacpp import LlamaCppEngine
from modelport.backends.llamacpp.output_grammar import output_grammar
from modelport.core.catalog import LlamaCppBackend, ModelCard
from modelport.core.types import (
    ChatRequest,
    Message,
    Sampling,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)

pytestmark = pytest.mark.engine

WEATHER = Tool(
    name="get_weather",
    description="The current weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
# As Claude Code's `Workflow` tool: a bound far beyond what a grammar may hold.
SCRIPT = Tool(
    name="run_script",
    parameters={
        "type": "object",
        "properties": {"script": {"type": "string", "maxLength": 524_288}},
        "required": ["script"],
    },
)
CARD = ModelCard(
    id="test/generic",
    name="generic",
    description="",
    context_length=4096,
    tool_format="generic",
    supported_parameters=("tools",),
)


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    config = LlamaCppBackend(path=MODEL, instances=1)
    with running(LlamaCppEngine(config, CARD, default_threads=1)) as started:
        yield started


def ask(
    text: str, mode: str, *tools: Tool, name: str | None = None, history: tuple[Message, ...] = ()
) -> ChatRequest:
    return ChatRequest(
        model="test/generic",
        messages=(Message("user", (TextPart(text),)), *history),
        tools=tools,
        tool_choice=ToolChoice(mode=mode, name=name),  # type: ignore[arg-type]
        sampling=Sampling(temperature=0),
        max_output_tokens=48,
    )


def test_the_tools_and_the_history_are_written_into_the_prompt(engine: LlamaCppEngine) -> None:
    history = (
        Message("assistant", (ToolCallPart("c1", "get_weather", '{"city": "Paris"}'),)),
        Message("user", (ToolResultPart("c1", "Sunny"),)),
    )
    prompt = engine.render_prompt(ask("Weather in Paris?", "auto", WEATHER, history=history))
    assert prompt.startswith("<|im_start|>system\nYou can call functions")
    assert '"name": "get_weather"' in prompt.split("</tools>")[0]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<|im_start|>user\n<tool_response>\nSunny\n</tool_response><|im_end|>" in prompt
    hidden = engine.render_prompt(ask("Weather in Paris?", "none", WEATHER))
    assert "<tools>" not in hidden


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["required", "named"])
async def test_a_forced_call_is_one_well_formed_call(engine: LlamaCppEngine, mode: str) -> None:
    name = "get_weather" if mode == "named" else None
    done = await complete(engine, ask("What is the weather in Paris?", mode, WEATHER, name=name))
    assert done.finish_reason == "tool_calls"
    [call] = done.tool_calls  # parallel_tool_calls is on: still one call per answer
    assert call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)
    assert not done.text


@pytest.mark.asyncio
async def test_auto_answers_in_text_or_with_a_well_formed_call(engine: LlamaCppEngine) -> None:
    done = await complete(engine, ask("Hi! How are you?", "auto", WEATHER))
    assert done.finish_reason in ("stop", "length", "tool_calls")
    assert "<tool_call>" not in (done.text or "")
    for call in done.tool_calls:
        assert call.name == "get_weather" and "city" in json.loads(call.arguments)


@pytest.mark.asyncio
async def test_a_schema_beyond_the_bounds_is_loosened_not_refused(
    engine: LlamaCppEngine,
) -> None:
    done = await complete(engine, ask("Print hello.", "required", SCRIPT))
    assert done.finish_reason in ("tool_calls", "length")
    if done.finish_reason == "tool_calls":
        assert isinstance(json.loads(done.tool_calls[0].arguments)["script"], str)


def test_the_grammar_of_auto_is_calls_or_text() -> None:
    grammar = output_grammar(ask("x", "auto", WEATHER), tool_format="generic", thinking="off")
    assert grammar.first is not None and "answer ::= calls | text" in grammar.first
    assert "calls ::= call\n" in grammar.first  # one call per answer
    assert (
        output_grammar(ask("x", "none", WEATHER), tool_format="generic", thinking="off").first
        is None
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("max_tokens", [1, 2, 4])
async def test_a_call_cut_before_its_tag_is_whole_is_not_text(
    engine: LlamaCppEngine, max_tokens: int
) -> None:
    """A forced call the output limit cuts inside `<tool_call>` ends with finish_reason
    "length" and no text: the partial tag is the start of a call, not part of an answer."""
    request = ask("What is the weather in Paris?", "required", WEATHER)
    done = await complete(engine, msgspec.structs.replace(request, max_output_tokens=max_tokens))
    assert done.finish_reason == "length"
    assert not done.text and not done.tool_calls

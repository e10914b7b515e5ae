"""One conversation through all three doors (chat completions, Anthropic messages, the
Responses API), streamed and whole, over the same scripted upstream: the same content, the
same reasoning and the same tool calls come out of each (golden)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from tests.e2e.server import RunningServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script, ToolCallScript
from tests.support.scripted import scripted_model_config

MODEL = "fake/three-doors"
TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
GOLDEN = {
    "reasoning": "The user asks about the weather; I should look it up.",
    "text": "Let me check.",
    "calls": [("get_weather", {"city": "Hangzhou"})],
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream()
    fake.start_in_thread()
    fake.on(
        "WEATHER",
        Script(
            reasoning=["The user asks about the weather; ", "I should look it up."],
            text=["Let me ", "check."],
            tool_calls=[ToolCallScript("get_weather", ('{"city": ', '"Hangzhou"}'), id="call_9")],
        ),
    )
    yield fake
    fake.stop_thread()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream
) -> Iterator[RunningServer]:
    data: Path = tmp_path_factory.mktemp("doors")
    config = scripted_model_config(data, upstream.base_url, MODEL, thinking="always")
    with RunningServer(data, config) as running:
        yield running


def via_chat(server: RunningServer, stream: bool) -> dict[str, Any]:
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.admin_key) as client:
        return _chat(client, stream)


def _chat(client: openai.OpenAI, stream: bool) -> dict[str, Any]:
    ask: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "WEATHER in Hangzhou?"}],
        "tools": TOOLS_OPENAI,
    }
    if not stream:
        message = client.chat.completions.create(**ask).choices[0].message
        calls = [
            (c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []
        ]  # type: ignore[union-attr]
        return {"reasoning": message.reasoning, "text": message.content, "calls": calls}  # type: ignore[attr-defined]
    reasoning = text = ""
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    for chunk in client.chat.completions.create(**ask, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning", None) or ""
        text += delta.content or ""
        for call in delta.tool_calls or []:
            if call.function and call.function.name:
                names[call.index] = call.function.name
            arguments[call.index] = arguments.get(call.index, "") + (
                (call.function.arguments if call.function else "") or ""
            )
    calls = [(names[i], json.loads(arguments[i])) for i in sorted(names)]
    return {"reasoning": reasoning, "text": text, "calls": calls}


def via_messages(server: RunningServer, stream: bool) -> dict[str, Any]:
    base = server.base_url + "/api/anthropic"
    with anthropic.Anthropic(base_url=base, api_key=server.admin_key) as client:
        return _messages(client, stream)


def _messages(client: anthropic.Anthropic, stream: bool) -> dict[str, Any]:
    ask: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "WEATHER in Hangzhou?"}],
        "tools": [
            {
                "name": "get_weather",
                "description": "The weather in a city.",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
    }
    if stream:
        with client.messages.stream(**ask) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**ask)
    reasoning = "".join(b.thinking for b in message.content if b.type == "thinking")
    text = "".join(b.text for b in message.content if b.type == "text")
    calls = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    return {"reasoning": reasoning, "text": text, "calls": calls}


def via_responses(server: RunningServer, stream: bool) -> dict[str, Any]:
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.admin_key) as client:
        return _responses(client, stream)


def _responses(client: openai.OpenAI, stream: bool) -> dict[str, Any]:
    ask: dict[str, Any] = {
        "model": MODEL,
        "input": "WEATHER in Hangzhou?",
        "tools": [{"type": "function", **TOOLS_OPENAI[0]["function"]}],
    }
    if stream:
        with client.responses.stream(**ask) as events:
            response = events.get_final_response()
    else:
        response = client.responses.create(**ask)
    reasoning = "".join(
        part.text
        for item in response.output
        if item.type == "reasoning"
        for part in item.content or []
    )
    calls = [
        (i.name, json.loads(i.arguments)) for i in response.output if i.type == "function_call"
    ]
    return {"reasoning": reasoning, "text": response.output_text, "calls": calls}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    "door", [via_chat, via_messages, via_responses], ids=["chat", "messages", "responses"]
)
def test_every_door_tells_the_same_answer(server: RunningServer, door: Any, stream: bool) -> None:
    assert door(server, stream) == GOLDEN

"""Encoding events as OpenAI responses: the SSE stream, accumulated as a client does, equals
the non-streaming body for the same events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.core.collect import collect
from modelport.core.errors import UpstreamError
from modelport.core.events import (
    Error,
    Event,
    ReasoningDelta,
    Start,
    Stop,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from modelport.core.invariants import check_stream
from modelport.protocols.openai.encode import ChunkEncoder, encode_completion


async def _aiter(events: list[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


def whole(events: list[Event], **options: Any) -> dict[str, Any]:
    completion = asyncio.run(collect(_aiter(events)))
    body = encode_completion(completion, completion_id="chatcmpl-1", created=1, **options)
    return msgspec.json.decode(body)


def stream(events: list[Event], include_usage: bool = True, **options: Any) -> bytes:
    encoder = ChunkEncoder(
        completion_id="chatcmpl-1", created=1, model="m", include_usage=include_usage, **options
    )
    return b"".join(encoder.encode(event) for event in events)


def accumulate(sse: bytes) -> dict[str, Any]:
    """Rebuild a message from SSE chunks the way OpenAI-compatible clients do."""
    assert sse.endswith(b"data: [DONE]\n\n")
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish = native = None
    usage = None
    for block in sse.split(b"\n\n"):
        if not block or block == b"data: [DONE]":
            continue
        assert block.startswith(b"data: ")
        chunk = msgspec.json.decode(block[6:])
        assert chunk["object"] == "chat.completion.chunk" and "choices" in chunk
        if chunk.get("usage"):
            assert chunk["choices"] == []
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning") or "")
            assert delta.get("reasoning") == delta.get("reasoning_content")
            for call in delta.get("tool_calls") or ():
                assert "function" in call
                entry = calls.setdefault(call["index"], {"arguments": ""})
                if "id" in call:
                    entry.update(id=call["id"], name=call["function"]["name"])
                entry["arguments"] += call["function"]["arguments"]
            if choice["finish_reason"] is not None:
                finish, native = choice["finish_reason"], choice.get("native_finish_reason")
    return {
        "content": "".join(content),
        "reasoning": "".join(reasoning) or None,
        "tool_calls": [calls[i] for i in sorted(calls)],
        "finish_reason": finish,
        "native_finish_reason": native,
        "usage": usage,
    }


texts = st.text(min_size=1, max_size=12)


@st.composite
def event_streams(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = [Start("m", "b")]
    index = 0
    for kind in draw(st.lists(st.sampled_from(["text", "reasoning", "tool"]), max_size=5)):
        if kind == "text":
            events += [TextDelta(index, t) for t in draw(st.lists(texts, min_size=1, max_size=4))]
        elif kind == "reasoning":
            events += [
                ReasoningDelta(index, t) for t in draw(st.lists(texts, min_size=1, max_size=4))
            ]
        else:
            events.append(ToolCallStart(index, f"call_{index}", draw(st.sampled_from(["f", "g"]))))
            events += [ToolCallDelta(index, t) for t in draw(st.lists(texts, max_size=4))]
        index += 1
    prompt, completion = draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6))
    events.append(Usage(prompt, completion, draw(st.integers(0, completion))))
    events.append(
        Stop(
            draw(st.sampled_from(["stop", "length", "tool_calls"])),
            draw(st.sampled_from([None, "eos"])),
        )
    )
    return events


@settings(max_examples=200, deadline=None)
@given(event_streams())
def test_streamed_equals_whole(events: list[Event]) -> None:
    check_stream(events)
    body = whole(events)
    assert body["object"] == "chat.completion" and body["id"] == "chatcmpl-1"
    message = body["choices"][0]["message"]
    streamed = accumulate(stream(events))
    assert streamed["content"] == (message["content"] or "")
    assert streamed["reasoning"] == message["reasoning"] == message["reasoning_content"]
    expected_calls = [
        {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in message["tool_calls"] or ()
    ]
    assert streamed["tool_calls"] == expected_calls
    assert streamed["finish_reason"] == body["choices"][0]["finish_reason"]
    assert streamed["native_finish_reason"] == body["choices"][0]["native_finish_reason"]
    assert streamed["usage"] == body["usage"]


def test_whole_body_shape() -> None:
    events: list[Event] = [
        Start("qwen/qwen3-8b", "b"),
        ReasoningDelta(0, "hmm"),
        TextDelta(1, "Hi"),
        Usage(10, 5, 2),
        Stop("stop", "eos"),
    ]
    body = whole(events)
    choice = body["choices"][0]
    assert body["model"] == "qwen/qwen3-8b" and isinstance(body["created"], int)
    assert choice["message"] == {
        "role": "assistant",
        "content": "Hi",
        "reasoning": "hmm",
        "reasoning_content": "hmm",
        "refusal": None,
        "tool_calls": None,
    }
    assert choice["logprobs"] is None and choice["native_finish_reason"] == "eos"
    assert body["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }


def test_tool_only_answer_has_null_content_and_string_arguments() -> None:
    events: list[Event] = [
        Start("m"),
        ToolCallStart(0, "call_a", "f"),
        ToolCallDelta(0, '{"x"'),
        ToolCallDelta(0, ": 1}"),
        Usage(1, 1),
        Stop("tool_calls"),
    ]
    message = whole(events)["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    ]


def test_excluded_reasoning_is_hidden_in_both_forms() -> None:
    events: list[Event] = [
        Start("m"),
        ReasoningDelta(0, "secret"),
        TextDelta(1, "ok"),
        Usage(1, 2, 1),
        Stop("stop"),
    ]
    assert whole(events, exclude_reasoning=True)["choices"][0]["message"]["reasoning"] is None
    assert b"secret" not in stream(events, exclude_reasoning=True)
    # ... but the reasoning tokens are still counted (and billed).
    assert accumulate(stream(events, exclude_reasoning=True))["usage"][
        "completion_tokens_details"
    ] == {"reasoning_tokens": 1}


def test_usage_chunk_only_when_asked() -> None:
    events: list[Event] = [Start("m"), TextDelta(0, "x"), Usage(3, 1), Stop("stop")]
    assert accumulate(stream(events, include_usage=False))["usage"] is None
    assert accumulate(stream(events))["usage"]["total_tokens"] == 4


def test_every_stream_has_a_finish_reason_even_on_error() -> None:
    events: list[Event] = [
        Start("m"),
        TextDelta(0, "par"),
        Error(UpstreamError("upstream went away")),
    ]
    sse = stream(events)
    assert accumulate(sse)["finish_reason"] == "error"
    last_chunk = msgspec.json.decode(sse.split(b"\n\n")[-3][6:])
    assert last_chunk["error"]["message"] == "upstream went away"
    assert last_chunk["error"]["type"] == "upstream_error"


def test_first_chunk_carries_the_assistant_role() -> None:
    sse = stream([Start("m"), Stop("stop")])
    first = msgspec.json.decode(sse.split(b"\n\n")[0][6:])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["choices"][0]["finish_reason"] is None

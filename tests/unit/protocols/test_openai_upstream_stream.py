"""Upstream chunks -> canonical events: blocks, tool calls, finish reasons, usage, logprobs and
errors sent inside the stream. Pure code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelport.core.errors import (
    ContextLengthExceeded,
    ModelportError,
    RateLimited,
    UpstreamError,
)
from modelport.core.events import (
    Event,
    Logprobs,
    ReasoningDelta,
    Start,
    Stop,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from modelport.core.invariants import check_stream
from modelport.protocols.openai.upstream_stream import StreamTranslator


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish, **extra}
    return json.dumps({"object": "chat.completion.chunk", "choices": [choice]}).encode()


def usage_chunk(prompt: int, completion: int, reasoning: int = 0, cached: int = 0) -> bytes:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    return json.dumps({"choices": [], "usage": usage}).encode()


def translate(*payloads: bytes) -> list[Event]:
    translator = StreamTranslator()
    events: list[Event] = [Start(model="m")]
    for payload in payloads:
        events.extend(translator.feed(None, payload))
    events.extend(translator.finish())
    check_stream(events)
    return events[1:]


def test_text_reasoning_usage_and_a_late_usage_chunk() -> None:
    events = translate(
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Let me "}),
        chunk({"reasoning_content": "think."}),
        chunk({"content": "Hello"}),
        chunk({"content": " world"}),
        chunk(finish="stop"),
        usage_chunk(12, 9, reasoning=4, cached=8),
        b"[DONE]",
    )
    assert events == [
        ReasoningDelta(0, "Let me "),
        ReasoningDelta(0, "think."),
        TextDelta(1, "Hello"),
        TextDelta(1, " world"),
        Usage(prompt_tokens=12, completion_tokens=9, reasoning_tokens=4, cached_tokens=8),
        Stop("stop", "stop"),
    ]


def test_the_newer_reasoning_field_is_read_too_and_kinds_alternate_into_new_blocks() -> None:
    events = translate(
        chunk({"reasoning": "a"}),
        chunk({"content": "b"}),
        chunk({"reasoning": "c"}),
        chunk({"content": "d"}, finish="length"),
    )
    assert events == [
        ReasoningDelta(0, "a"),
        TextDelta(1, "b"),
        ReasoningDelta(2, "c"),
        TextDelta(3, "d"),
        Stop("length", "length"),
    ]


def test_parallel_tool_calls_with_argument_fragments_and_a_missing_id() -> None:
    events = translate(
        chunk({"content": "Checking."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"name": "now", "arguments": "{}"}}]}),
        chunk(finish="tool_calls"),
    )
    assert events[:5] == [
        TextDelta(0, "Checking."),
        ToolCallStart(1, "call_a", "get"),
        ToolCallDelta(1, '{"city": '),
        ToolCallDelta(1, '"Paris"}'),
        events[4],
    ]
    generated = events[4]
    assert isinstance(generated, ToolCallStart)
    assert (generated.index, generated.name) == (2, "now")
    assert generated.id.startswith("call_") and len(generated.id) > 10
    assert events[5:] == [ToolCallDelta(2, "{}"), Stop("tool_calls", "tool_calls")]


def test_a_tool_call_whose_name_arrives_late_buffers_its_arguments() -> None:
    events = translate(
        chunk({"tool_calls": [{"index": 0, "id": "call_x", "function": {"arguments": '{"a"'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ": 1}"}}]}),
        chunk(finish="tool_calls"),
    )
    assert events == [
        ToolCallStart(0, "call_x", "f"),
        ToolCallDelta(0, '{"a": 1}'),
        Stop("tool_calls", "tool_calls"),
    ]


def test_stop_after_tool_calls_means_tool_calls_and_vllm_stop_reason_is_native() -> None:
    events = translate(
        chunk(
            {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}
        ),
        chunk(finish="stop"),
    )
    assert events[-1] == Stop("tool_calls", "stop")
    # A string stop_reason is the stop string that matched (for Anthropic's stop_sequence);
    # a token id is not.
    events = translate(chunk({"content": "x"}), chunk(finish="stop", stop_reason="</answer>"))
    assert events[-1] == Stop("stop", "</answer>", "</answer>")
    events = translate(chunk({"content": "x"}), chunk(finish="stop", stop_reason=151645))
    assert events[-1] == Stop("stop", "151645")
    # SGLang names it `matched_stop`.
    sglang = chunk(finish="stop", matched_stop="END")
    assert translate(chunk({"content": "x"}), sglang)[-1] == Stop("stop", "stop", "END")


@pytest.mark.parametrize(
    ("native", "normalized"),
    [
        ("stop", "stop"),
        ("eos", "stop"),
        ("length", "length"),
        ("max_tokens", "length"),
        ("content_filter", "content_filter"),
        ("error", "error"),
        ("abort", "error"),
        ("something_new", "stop"),
    ],
)
def test_finish_reasons_are_normalized(native: str, normalized: str) -> None:
    assert translate(chunk({"content": "x"}, finish=native))[-1] == Stop(normalized, native)  # type: ignore[arg-type]


def test_a_stream_without_a_finish_reason_is_an_upstream_error() -> None:
    translator = StreamTranslator()
    translator.feed(None, chunk({"content": "partial"}))
    translator.feed(None, usage_chunk(1, 1))
    with pytest.raises(UpstreamError, match="without a finish reason"):
        translator.finish()


def test_logprobs_attach_to_the_block_they_belong_to() -> None:
    logprobs = {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.25,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                    {"token": "Yo", "logprob": -2.0, "bytes": None},
                ],
            }
        ]
    }
    events = translate(chunk({"content": "Hi"}, logprobs=logprobs), chunk(finish="stop"))
    assert isinstance(events[1], Logprobs)
    entry = events[1].entries[0]
    assert (events[1].index, entry.token, entry.logprob, entry.bytes) == (0, "Hi", -0.25, (72, 105))
    assert entry.top == (("Hi", -0.25, (72, 105)), ("Yo", -2.0, None))


def test_only_the_latest_usage_is_emitted_once_before_stop() -> None:
    events = translate(
        chunk({"content": "a"}),
        usage_chunk(3, 1),
        chunk({"content": "b"}),
        usage_chunk(3, 2),
        chunk(finish="stop"),
    )
    assert [e for e in events if isinstance(e, Usage)] == [Usage(3, 2)]


def test_reasoning_tokens_never_exceed_completion_tokens() -> None:
    events = translate(chunk({"content": "a"}, finish="stop"), usage_chunk(3, 2, reasoning=5))
    assert Usage(3, 2, reasoning_tokens=2) in events


def test_a_whole_non_streamed_completion_is_translated_too() -> None:
    completion = {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Sure.",
                    "reasoning_content": "ok",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3},
    }
    assert translate(json.dumps(completion).encode()) == [
        ReasoningDelta(0, "ok"),
        TextDelta(1, "Sure."),
        ToolCallStart(2, "call_1", "f"),
        ToolCallDelta(2, "{}"),
        Usage(5, 3),
        Stop("tool_calls", "tool_calls"),
    ]


def test_other_choices_are_ignored() -> None:
    other = json.dumps({"choices": [{"index": 1, "delta": {"content": "nope"}}]}).encode()
    assert translate(other, chunk({"content": "yes"}, finish="stop"))[0] == TextDelta(0, "yes")


@pytest.mark.parametrize(
    ("payload", "event", "kind", "message"),
    [
        (b'{"error": {"message": "engine died", "code": 500}}', None, UpstreamError, "engine died"),
        (b'{"error": {"message": "slow down", "code": 429}}', None, RateLimited, "slow down"),
        (
            b'{"object": "error", "code": 400,'
            b' "message": "This model\'s maximum context length is 10 tokens"}',
            None,
            ContextLengthExceeded,
            "maximum context length",
        ),
        (b'{"error": "plain words"}', None, UpstreamError, "plain words"),
        (b"not json at all", "error", UpstreamError, "not json at all"),
        (
            b'{"error": {"message": "bad", "code": "context_length_exceeded"}}',
            None,
            ContextLengthExceeded,
            "bad",
        ),
    ],
)
def test_errors_inside_the_stream_raise_mapped_types(
    payload: bytes, event: str | None, kind: type[ModelportError], message: str
) -> None:
    translator = StreamTranslator(upstream="http://up/v1", model="m")
    translator.feed(None, chunk({"content": "partial"}))
    with pytest.raises(kind) as info:
        translator.feed(event, payload)
    assert type(info.value) is kind
    # The upstream's words and address are for the log; a client sees them only for a
    # refusal it caused (upstream_errors' rule).
    detail = info.value.detail or ""
    assert message in detail and "http://up/v1" in detail
    assert (message in info.value.message) is (kind is ContextLengthExceeded)
    assert "http://up" not in info.value.message


def test_an_unreadable_chunk_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="unreadable"):
        StreamTranslator().feed(None, b"{broken")


def test_interleaved_tool_arguments_are_refused_rather_than_misattributed() -> None:
    translator = StreamTranslator()
    translator.feed(
        None,
        chunk(
            {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}]}
        ),
    )
    translator.feed(
        None,
        chunk(
            {"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{"}}]}
        ),
    )
    with pytest.raises(UpstreamError, match="interleaved"):
        translator.feed(None, chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}))

"""Encoding canonical results in Anthropic's Messages shape: error bodies, the model list, the
whole `message` body, and the SSE stream, read back by the official `anthropic` SDK the way its
`messages.stream()` helper does for real clients."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.core import errors
from modelport.core.catalog import ModelCard
from modelport.core.collect import Completion, collect
from modelport.core.errors import (
    ContextLengthExceeded,
    MalformedModelOutput,
    ModelportError,
    Overloaded,
    UpstreamError,
)
from modelport.core.events import (
    Error,
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
from modelport.core.types import TokenLogprob, ToolCallPart
from modelport.protocols.anthropic.encode import (
    MessageStreamEncoder,
    encode_message,
    stop_reason,
    thinking_signature,
    usage_object,
)
from modelport.protocols.anthropic.errors import (
    error_body,
    error_message,
    error_object,
    error_type,
)
from modelport.protocols.anthropic.models import encode_model, encode_model_list

# -- errors ------------------------------------------------------------------------------------

ERROR_TYPES: dict[type[ModelportError], str] = {
    errors.ModelportError: "api_error",
    errors.InvalidRequest: "invalid_request_error",
    errors.ContextLengthExceeded: "invalid_request_error",
    errors.MethodNotAllowed: "invalid_request_error",
    errors.AuthenticationFailed: "authentication_error",
    errors.InsufficientBalance: "billing_error",
    errors.PermissionDenied: "permission_error",
    errors.NotFound: "not_found_error",
    errors.ModelNotFound: "not_found_error",
    errors.PayloadTooLarge: "request_too_large",
    errors.RequestTimeout: "invalid_request_error",
    errors.RateLimited: "rate_limit_error",
    errors.Overloaded: "overloaded_error",
    errors.BackendUnavailable: "overloaded_error",
    errors.CircuitOpen: "overloaded_error",
    errors.UpstreamTimeout: "timeout_error",
    errors.UpstreamError: "api_error",
    errors.MalformedModelOutput: "api_error",
    errors.InternalError: "api_error",
}


@pytest.mark.parametrize(("cls", "expected"), list(ERROR_TYPES.items()))
def test_error_type_of_each_error_class(cls: type[ModelportError], expected: str) -> None:
    error = cls("boom")
    assert error_type(error) == expected
    assert error_object(error) == {"type": expected, "message": "boom"}


def test_every_error_class_has_a_pinned_anthropic_type() -> None:
    declared = {
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, ModelportError)
    }
    assert declared == set(ERROR_TYPES)


def test_context_overflow_uses_the_wording_claude_code_parses() -> None:
    error = ContextLengthExceeded("too long", prompt_tokens=50123, limit=40960)
    assert error_message(error) == "prompt is too long: 50123 tokens > 40960 maximum"
    assert error_body(error) == (
        b'{"type":"error","error":{"type":"invalid_request_error",'
        b'"message":"prompt is too long: 50123 tokens > 40960 maximum"}}'
    )


@pytest.mark.parametrize(("prompt_tokens", "limit"), [(None, None), (5000, None), (None, 4096)])
def test_context_overflow_without_both_numbers_keeps_its_message(
    prompt_tokens: int | None, limit: int | None
) -> None:
    error = ContextLengthExceeded(
        "The prompt is too long.", prompt_tokens=prompt_tokens, limit=limit
    )
    assert error_message(error) == "The prompt is too long."


def test_error_body_carries_the_request_id_only_when_given() -> None:
    error = errors.RateLimited("Slow down.")
    assert msgspec.json.decode(error_body(error, request_id="req_1")) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Slow down."},
        "request_id": "req_1",
    }
    assert b"request_id" not in error_body(error)


# -- models ------------------------------------------------------------------------------------


def card(model_id: str, name: str, created: int = 0) -> ModelCard:
    return ModelCard(
        id=model_id,
        name=name,
        description="",
        context_length=40960,
        max_output_tokens=8192,
        created=created,
    )


def test_model_object_shape() -> None:
    body = msgspec.json.decode(encode_model(card("qwen/qwen3-8b", "Qwen3 8B", 1745884800)))
    assert body == {
        "type": "model",
        "id": "qwen/qwen3-8b",
        "display_name": "Qwen3 8B",
        "created_at": "2025-04-29T00:00:00Z",
        "max_input_tokens": 40960,
        "max_tokens": 8192,
        "lifecycle": "active",
    }
    assert anthropic.types.ModelInfo.model_validate(body).display_name == "Qwen3 8B"


def test_unknown_creation_time_is_the_epoch() -> None:
    body = msgspec.json.decode(encode_model(card("m", "M")))
    assert body["created_at"] == "1970-01-01T00:00:00Z"


def test_model_list_names_its_first_and_last_ids() -> None:
    body = msgspec.json.decode(encode_model_list([card("a", "A"), card("b", "B"), card("c", "C")]))
    assert [model["id"] for model in body["data"]] == ["a", "b", "c"]
    assert (body["has_more"], body["first_id"], body["last_id"]) == (False, "a", "c")


def test_empty_model_list_has_null_ids() -> None:
    body = msgspec.json.decode(encode_model_list([]))
    assert body == {"data": [], "has_more": False, "first_id": None, "last_id": None}


def test_model_list_reads_back_through_the_sdk() -> None:
    body = encode_model_list([card("a", "A"), card("b", "B")])
    client = sdk_client(lambda _: httpx2.Response(200, content=body))
    assert [model.id for model in client.models.list()] == ["a", "b"]


# -- stop reasons, usage, signatures -------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "sequences", "expected"),
    [
        (Stop("stop"), (), ("end_turn", None)),
        (Stop("stop", "eos"), ("###",), ("end_turn", None)),
        (Stop("stop", "stop_sequence", "###"), ("###",), ("stop_sequence", "###")),
        (Stop("stop", "###", "###"), ("END", "###"), ("stop_sequence", "###")),  # vLLM's report
        # An engine's own stop word, not one of the client's: an ordinary end of turn.
        (Stop("stop", "<|eot|>", "<|eot|>"), ("###",), ("end_turn", None)),
        # A client stop string that happens to read like a native reason.
        (Stop("stop", "stop"), ("stop",), ("end_turn", None)),
        (Stop("length"), (), ("max_tokens", None)),
        (Stop("length", "###"), ("###",), ("max_tokens", None)),
        (Stop("tool_calls"), (), ("tool_use", None)),
        (Stop("content_filter"), (), ("refusal", None)),
        (Stop("error", "abort"), (), ("end_turn", None)),
    ],
)
def test_stop_reason(stop: Stop, sequences: tuple[str, ...], expected: tuple[str, None]) -> None:
    assert stop_reason(stop, sequences) == expected


def test_input_tokens_leave_out_cache_reads() -> None:
    assert usage_object(Usage(prompt_tokens=100, completion_tokens=7, cached_tokens=60)) == {
        "input_tokens": 40,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }


def test_thinking_signature_is_stable_opaque_and_text_specific() -> None:
    signature = thinking_signature("Let me think.")
    assert signature == thinking_signature("Let me think.")
    assert signature and "Let me think" not in signature
    assert signature != thinking_signature("Let me think!")
    assert thinking_signature("")  # even an empty block gets a non-empty signature


# -- the whole message -------------------------------------------------------------------------


def completion(
    *,
    text: str | None = None,
    reasoning: str | None = None,
    tool_calls: tuple[ToolCallPart, ...] = (),
    finish_reason: Any = "stop",
    native: str | None = None,
    stop_sequence: str | None = None,
) -> Completion:
    return Completion(
        model="qwen/qwen3-8b",
        backend="b",
        text=text,
        reasoning=reasoning,
        tool_calls=tool_calls,
        logprobs=None,
        usage=Usage(20, 9, reasoning_tokens=4, cached_tokens=5),
        finish_reason=finish_reason,
        native_finish_reason=native,
        stop_sequence=stop_sequence,
    )


def message(done: Completion, **options: Any) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.json.decode(encode_message(done, message_id="msg_1", **options))
    anthropic.types.Message.model_validate(body)  # the SDK's own type accepts it
    return body


def test_message_with_thinking_text_and_tool_use() -> None:
    done = completion(
        reasoning="The user wants weather.",
        text="Let me check.",
        tool_calls=(
            ToolCallPart("toolu_1", "get_weather", '{"city": "Paris", "days": [1, 2]}'),
            ToolCallPart("toolu_2", "get_time", ""),
        ),
        finish_reason="tool_calls",
    )
    assert message(done) == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "qwen/qwen3-8b",
        "content": [
            {
                "type": "thinking",
                "thinking": "The user wants weather.",
                "signature": thinking_signature("The user wants weather."),
            },
            {"type": "text", "text": "Let me check."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris", "days": [1, 2]},
            },
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 15,
            "output_tokens": 9,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 5,
        },
    }


def test_excluded_reasoning_leaves_out_the_thinking_block() -> None:
    body = message(completion(reasoning="secret", text="ok"), exclude_reasoning=True)
    assert body["content"] == [{"type": "text", "text": "ok"}]
    assert body["usage"]["output_tokens"] == 9  # the thinking is still counted


@pytest.mark.parametrize("text", [None, ""])
def test_no_empty_text_block(text: str | None) -> None:
    calls = (ToolCallPart("toolu_1", "f", "  "),)
    body = message(completion(text=text, tool_calls=calls, finish_reason="tool_calls"))
    assert body["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]
    assert message(completion(text=text))["content"] == []


def test_message_stopped_by_a_stop_sequence() -> None:
    done = completion(text="1, 2, 3", native="stop_sequence", stop_sequence="###")
    body = message(done, stop_sequences=("###",))
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "###")
    body = message(completion(text="1, 2, 3", native="eos"), stop_sequences=("###",))
    assert (body["stop_reason"], body["stop_sequence"]) == ("end_turn", None)


def test_cut_off_message_stops_on_max_tokens() -> None:
    body = message(completion(text="1, 2,", finish_reason="length", native="length"))
    assert (body["stop_reason"], body["stop_sequence"]) == ("max_tokens", None)


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]", '"Paris"'])
def test_tool_arguments_that_are_not_an_object_are_reported(arguments: str) -> None:
    calls = (ToolCallPart("toolu_1", "get_weather", arguments),)
    with pytest.raises(MalformedModelOutput, match="get_weather"):
        encode_message(completion(tool_calls=calls), message_id="msg_1")


# -- the stream --------------------------------------------------------------------------------


def stream(events: list[Event], **options: Any) -> bytes:
    options = {"message_id": "msg_1", "model": "qwen/qwen3-8b", **options}
    encoder = MessageStreamEncoder(**options)
    return b"".join(encoder.encode(event) for event in events)


def frames(sse: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Split SSE into (event name, payload); every event has both lines and a matching type."""
    assert sse.endswith(b"\n\n")
    out = []
    for block in sse[:-2].split(b"\n\n"):
        name_line, data_line = block.split(b"\n")
        assert name_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        name, payload = name_line[7:].decode(), msgspec.json.decode(data_line[6:])
        assert payload["type"] == name
        out.append((name, payload))
    return out


DELTA_TYPES = {
    "thinking": {"thinking_delta", "signature_delta"},
    "text": {"text_delta"},
    "tool_use": {"input_json_delta"},
}


def check_sequence(sse: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Check the event order Anthropic clients rely on and return the frames."""
    events = frames(sse)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("message_delta") == names.count("message_stop") == 1
    open_block: dict[str, Any] | None = None
    opened = 0
    for name, payload in events[2:-2]:
        if name == "content_block_start":
            assert open_block is None, "a block opened before the previous one stopped"
            assert payload["index"] == opened
            open_block = {**payload["content_block"], "index": opened, "last_delta": None}
            opened += 1
        elif name == "content_block_delta":
            assert open_block is not None and payload["index"] == open_block["index"]
            assert open_block["last_delta"] != "signature_delta"
            delta_type = payload["delta"]["type"]
            assert delta_type in DELTA_TYPES[open_block["type"]]
            open_block["last_delta"] = delta_type
        else:
            assert name == "content_block_stop"
            assert open_block is not None and payload["index"] == open_block["index"]
            if open_block["type"] == "thinking":
                assert open_block["last_delta"] == "signature_delta"
            open_block = None
    assert open_block is None
    return events


def sdk_client(handler: Any) -> anthropic.Anthropic:
    transport = httpx2.MockTransport(handler)
    return anthropic.Anthropic(
        base_url="http://modelport.test",
        api_key="k",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )


def sdk_read(sse: bytes) -> dict[str, Any]:
    """The final message `client.messages.stream(...)` accumulates from `sse` (nulls left out)."""
    headers = {"content-type": "text/event-stream"}
    client = sdk_client(lambda _: httpx2.Response(200, headers=headers, content=sse))
    request: Any = {"role": "user", "content": "hi"}
    with client.messages.stream(model="qwen/qwen3-8b", max_tokens=64, messages=[request]) as s:
        final: dict[str, Any] = s.get_final_message().to_dict(exclude_none=True)
    return final


async def _aiter(events: list[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


def whole(events: list[Event], **options: Any) -> dict[str, Any]:
    """The non-streaming body for the same events, as the SDK's `Message` reads it (nulls left
    out)."""
    done = asyncio.run(collect(_aiter(events)))
    body = encode_message(done, message_id="msg_1", **options)
    result: dict[str, Any] = anthropic.types.Message.model_validate_json(body).to_dict(
        exclude_none=True
    )
    return result


def test_text_stream_bytes() -> None:
    events: list[Event] = [Start("qwen/qwen3-8b"), TextDelta(0, "Hi"), Usage(3, 1), Stop("stop")]
    assert stream(events, input_tokens=3) == (
        b"event: message_start\n"
        b'data: {"type":"message_start","message":{"id":"msg_1","type":"message",'
        b'"role":"assistant","model":"qwen/qwen3-8b","content":[],"stop_reason":null,'
        b'"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":0,'
        b'"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}}\n\n'
        b'event: ping\ndata: {"type":"ping"}\n\n'
        b"event: content_block_start\n"
        b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
        b"\n\n"
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}'
        b"\n\n"
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b"event: message_delta\n"
        b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
        b'"usage":{"input_tokens":3,"output_tokens":1,"cache_creation_input_tokens":0,'
        b'"cache_read_input_tokens":0}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


FULL: list[Event] = [
    Start("qwen/qwen3-8b", "b"),
    ReasoningDelta(0, "The user "),
    ReasoningDelta(0, "wants weather."),
    TextDelta(1, "Let me "),
    TextDelta(1, "check."),
    Logprobs(1, (TokenLogprob("check", -0.1),)),
    ToolCallStart(2, "toolu_1", "get_weather"),
    ToolCallDelta(2, '{"city": '),
    ToolCallDelta(2, '"Paris"}'),
    ToolCallStart(3, "toolu_2", "get_time"),
    Usage(20, 9, reasoning_tokens=4, cached_tokens=5),
    Stop("tool_calls", "tool_calls"),
]


def test_full_stream_reads_back_through_the_sdk() -> None:
    check_stream(FULL)
    sse = stream(FULL, input_tokens=20)
    check_sequence(sse)
    final = sdk_read(sse)
    assert final == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "qwen/qwen3-8b",
        "content": [
            {
                "type": "thinking",
                "thinking": "The user wants weather.",
                "signature": thinking_signature("The user wants weather."),
            },
            {"type": "text", "text": "Let me check."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 15,
            "output_tokens": 9,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 5,
        },
    }
    assert final == whole(FULL)


def test_message_start_carries_the_prompt_size_hint() -> None:
    (_, start), *_ = frames(stream(FULL, input_tokens=20))
    assert start["message"]["usage"] == {
        "input_tokens": 20,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert start["message"]["content"] == [] and start["message"]["stop_reason"] is None


def test_excluded_reasoning_sends_no_block_and_takes_no_index() -> None:
    sse = stream(FULL, exclude_reasoning=True)
    assert b"wants weather" not in sse and b"thinking" not in sse
    starts = [p for name, p in check_sequence(sse) if name == "content_block_start"]
    assert [(p["index"], p["content_block"]["type"]) for p in starts] == [
        (0, "text"),
        (1, "tool_use"),
        (2, "tool_use"),
    ]
    assert sdk_read(sse) == whole(FULL, exclude_reasoning=True)


def test_blocks_of_one_kind_with_different_canonical_indices_stay_apart() -> None:
    events: list[Event] = [
        Start("m"),
        ReasoningDelta(0, "first"),
        TextDelta(1, "a"),
        ReasoningDelta(2, "second"),
        TextDelta(3, "b"),
        Stop("stop"),
    ]
    check_stream(events)
    sse = stream(events)
    check_sequence(sse)
    content = sdk_read(sse)["content"]
    assert content == [
        {"type": "thinking", "thinking": "first", "signature": thinking_signature("first")},
        {"type": "text", "text": "a"},
        {"type": "thinking", "thinking": "second", "signature": thinking_signature("second")},
        {"type": "text", "text": "b"},
    ]


def test_empty_deltas_open_no_block() -> None:
    events: list[Event] = [
        Start("m"),
        ReasoningDelta(0, ""),
        TextDelta(1, ""),
        TextDelta(1, "x"),
        ToolCallStart(2, "toolu_1", "f"),
        ToolCallDelta(2, ""),
        Stop("tool_calls"),
    ]
    starts = [p for name, p in check_sequence(stream(events)) if name == "content_block_start"]
    assert [p["content_block"]["type"] for p in starts] == ["text", "tool_use"]


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        (Stop("stop", "stop_sequence", "###"), ("stop_sequence", "###")),
        (Stop("stop", "END", "END"), ("stop_sequence", "END")),
        (Stop("stop", "eos"), ("end_turn", None)),
        (Stop("length"), ("max_tokens", None)),
    ],
)
def test_stream_stop_reason(stop: Stop, expected: tuple[str, str | None]) -> None:
    sse = stream([Start("m"), TextDelta(0, "1, 2"), stop], stop_sequences=("###", "END"))
    final = sdk_read(sse)
    assert (final["stop_reason"], final.get("stop_sequence")) == expected


def test_stream_without_reported_usage_ends_with_the_hint() -> None:
    (*_, (_, delta), _) = frames(
        stream([Start("m"), TextDelta(0, "x"), Stop("stop")], input_tokens=8)
    )
    assert delta["usage"] == {
        "input_tokens": 8,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_error_event_after_start_is_raised_by_the_sdk() -> None:
    events: list[Event] = [Start("m"), TextDelta(0, "par"), Error(Overloaded("Busy, retry."))]
    sse = stream(events)
    names = [name for name, _ in frames(sse)]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "error"]
    with pytest.raises(anthropic.APIStatusError) as raised:
        sdk_read(sse)
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Busy, retry."},
    }


def test_encode_error_matches_an_error_event() -> None:
    encoder = MessageStreamEncoder(message_id="msg_1", model="m")
    error = UpstreamError("upstream went away")
    assert encoder.encode_error(error) == (
        b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
        b'"message":"upstream went away"}}\n\n'
    )
    assert encoder.encode(Error(error)) == encoder.encode_error(error)


# Streamed equals whole: answers in the shape Completion keeps (reasoning, text, tool calls),
# with deltas split anywhere, empty ones included.

chunks = st.lists(st.text(max_size=6), min_size=1, max_size=4)
json_objects = st.dictionaries(
    st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5), st.booleans()), max_size=3
)


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(cut, len(text)) for cut in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


@st.composite
def answers(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = [Start("qwen/qwen3-8b", "b")]
    index = 0
    if draw(st.booleans()):
        events += [ReasoningDelta(index, text) for text in draw(chunks)]
        index += 1
    if draw(st.booleans()):
        events += [TextDelta(index, text) for text in draw(chunks)]
        index += 1
    for arguments in draw(st.lists(json_objects, max_size=3)):
        events.append(ToolCallStart(index, f"toolu_{index}", draw(st.sampled_from(["f", "g"]))))
        encoded = msgspec.json.encode(arguments).decode() if arguments else ""
        cuts = draw(st.lists(st.integers(0, len(encoded)), max_size=4))
        events += [ToolCallDelta(index, part) for part in split(encoded, cuts)]
        index += 1
    prompt = draw(st.integers(0, 10**6))
    events.append(Usage(prompt, draw(st.integers(0, 10**6)), 0, draw(st.integers(0, prompt))))
    events.append(
        Stop(
            draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"])),
            draw(st.sampled_from([None, "eos", "###"])),
        )
    )
    return events


@settings(max_examples=60, deadline=None)
@given(answers(), st.booleans())
def test_streamed_equals_whole(events: list[Event], exclude: bool) -> None:
    check_stream(events)
    options: dict[str, Any] = {"stop_sequences": ("###",), "exclude_reasoning": exclude}
    sse = stream(events, **options)
    check_sequence(sse)
    assert sdk_read(sse) == whole(events, **options)

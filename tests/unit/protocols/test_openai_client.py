"""The OpenAI client side (for upstreams): request bodies, the SSE parser, chunk translation and
error mapping. Pure code, no network."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelport.core.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelportError,
    Overloaded,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
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
from modelport.core.types import (
    ChatRequest,
    ImagePart,
    Message,
    Reasoning,
    ReasoningPart,
    ResponseFormat,
    Sampling,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from modelport.protocols.openai.client import (
    SSEParser,
    StreamTranslator,
    build_request_body,
    error_detail,
    error_for_status,
    parse_retry_after,
)
from modelport.protocols.openai.dialects import DIALECTS

GENERIC = DIALECTS["generic"]


def user(text: str) -> Message:
    return Message("user", (TextPart(text),))


def body_for(request: ChatRequest, dialect: str = "generic", **kwargs: Any) -> dict[str, Any]:
    body = build_request_body(request, model="up/model", rules=DIALECTS[dialect], **kwargs)  # type: ignore[index]
    # What goes on the wire must be JSON: round-trip it as the upstream would see it.
    decoded: dict[str, Any] = json.loads(msgspec.json.encode(body))
    return decoded


# --------------------------------------------------------------------------- request body


def test_body_is_always_a_stream_with_usage_for_the_upstream_model() -> None:
    body = body_for(ChatRequest(model="catalog/id", messages=(user("hi"),)))
    assert body == {
        "model": "up/model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_messages_of_every_kind_become_openai_wire_messages() -> None:
    request = ChatRequest(
        model="m",
        messages=(
            Message("system", (TextPart("be brief"),)),
            Message(
                "user", (TextPart("what is this?"), ImagePart("data:image/png;base64,AA", "low"))
            ),
            Message(
                "assistant",
                (
                    ReasoningPart("look it up"),
                    ToolCallPart("call_1", "lookup", '{"q": "x"}'),
                    ToolCallPart("call_2", "lookup", '{"q": "y"}'),
                ),
            ),
            Message("tool", (ToolResultPart("call_1", "X"), ToolResultPart("call_2", "Y"))),
            Message("user", (TextPart("line one"), TextPart("line two")), name="ann"),
            Message("assistant", (TextPart("done"),)),
        ),
    )
    assert body_for(request)["messages"] == [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "look it up",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "y"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "X"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Y"},
        {"role": "user", "content": "line one\nline two", "name": "ann"},
        {"role": "assistant", "content": "done"},
    ]


def test_tool_results_inside_a_user_turn_come_first_as_tool_messages() -> None:
    request = ChatRequest(
        model="m",
        messages=(Message("user", (ToolResultPart("call_9", "42"), TextPart("and now?"))),),
    )
    assert body_for(request)["messages"] == [
        {"role": "tool", "tool_call_id": "call_9", "content": "42"},
        {"role": "user", "content": "and now?"},
    ]


@pytest.mark.parametrize(
    ("dialect", "field"),
    [
        ("generic", "reasoning_content"),
        ("vllm", "reasoning_content"),
        ("ollama", "reasoning"),
        ("raw", None),
    ],
)
def test_earlier_reasoning_goes_back_in_the_dialects_field(dialect: str, field: str | None) -> None:
    request = ChatRequest(
        model="m",
        messages=(
            user("q"),
            Message("assistant", (ReasoningPart("hmm"), TextPart("a"))),
            user("q2"),
        ),
    )
    assistant = body_for(request, dialect)["messages"][1]
    expected: dict[str, Any] = {"role": "assistant", "content": "a"}
    if field is not None:
        expected[field] = "hmm"
    assert assistant == expected


def test_tools_and_every_tool_choice() -> None:
    tools = (
        Tool(
            "get_weather",
            "Weather for a city",
            {"type": "object", "properties": {"city": {"type": "string"}}},
            strict=True,
        ),
        Tool("now"),
    )
    base = ChatRequest(model="m", messages=(user("hi"),), tools=tools, parallel_tool_calls=False)
    body = body_for(base)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
        },
        {
            "type": "function",
            "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    assert body["tool_choice"] == "auto"
    assert body["parallel_tool_calls"] is False
    for mode in ("none", "required"):
        choice = ToolChoice(mode=mode)  # type: ignore[arg-type]
        assert body_for(msgspec.structs.replace(base, tool_choice=choice))["tool_choice"] == mode
    named = msgspec.structs.replace(base, tool_choice=ToolChoice(mode="named", name="now"))
    assert body_for(named)["tool_choice"] == {"type": "function", "function": {"name": "now"}}


def test_no_tools_means_no_tool_fields() -> None:
    body = body_for(ChatRequest(model="m", messages=(user("hi"),), tool_choice=ToolChoice("none")))
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & body.keys()


FULL_SAMPLING = Sampling(
    temperature=0.0,
    top_p=0.9,
    top_k=20,
    min_p=0.05,
    top_a=0.1,
    frequency_penalty=0.5,
    presence_penalty=-0.5,
    repetition_penalty=1.1,
    seed=7,
    logit_bias={50256: -100.0, 11: 2.5},
    stop=("</end>", "\n\n"),
)


def test_every_sampling_field_that_is_set_is_sent_with_explicit_zeros_kept() -> None:
    body = body_for(ChatRequest(model="m", messages=(user("hi"),), sampling=FULL_SAMPLING))
    expected = {
        "temperature": 0.0,
        "top_p": 0.9,
        "top_k": 20,
        "min_p": 0.05,
        "top_a": 0.1,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "repetition_penalty": 1.1,
        "seed": 7,
        "logit_bias": {"50256": -100.0, "11": 2.5},
        "stop": ["</end>", "\n\n"],
    }
    assert {key: body[key] for key in expected} == expected


def test_unset_sampling_fields_are_not_sent() -> None:
    body = body_for(ChatRequest(model="m", messages=(user("hi"),), sampling=Sampling(top_k=5)))
    assert body["top_k"] == 5
    assert not {"temperature", "top_p", "seed", "stop", "logit_bias", "min_p"} & body.keys()


@pytest.mark.parametrize(
    ("dialect", "sent"),
    [
        ("generic", {"top_k": 20, "min_p": 0.05, "top_a": 0.1, "repetition_penalty": 1.1}),
        ("vllm", {"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1}),
        ("sglang", {"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1}),
        ("llamacpp_server", {"top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1}),
        ("ollama", {}),
        ("raw", {}),
    ],
)
def test_non_openai_sampling_keys_follow_the_dialect(dialect: str, sent: dict[str, Any]) -> None:
    body = body_for(ChatRequest(model="m", messages=(user("hi"),), sampling=FULL_SAMPLING), dialect)
    extra = {"top_k", "min_p", "top_a", "repetition_penalty", "repeat_penalty"}
    assert {key: body[key] for key in extra & body.keys()} == sent
    assert body["temperature"] == 0.0  # OpenAI's own keys go everywhere


def test_max_tokens_is_capped_at_the_context_length() -> None:
    request = ChatRequest(model="m", messages=(user("hi"),), max_output_tokens=128000)
    assert body_for(request, context_length=32768)["max_tokens"] == 32768
    small = msgspec.structs.replace(request, max_output_tokens=100)
    assert body_for(small, context_length=32768)["max_tokens"] == 100


def test_response_formats_and_logprobs() -> None:
    base = ChatRequest(model="m", messages=(user("hi"),), logprobs=True, top_logprobs=3)
    body = body_for(msgspec.structs.replace(base, response_format=ResponseFormat("json_object")))
    assert body["response_format"] == {"type": "json_object"}
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    with_schema = ResponseFormat("json_schema", schema=schema, name="thing", strict=True)
    body = body_for(msgspec.structs.replace(base, response_format=with_schema))
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }
    assert "response_format" not in body_for(ChatRequest(model="m", messages=(user("hi"),)))


def test_thinking_switch_and_chat_template_kwargs() -> None:
    request = ChatRequest(
        model="m",
        messages=(user("hi"),),
        reasoning=Reasoning(effort="low", enabled=False),
        chat_template_kwargs={"custom": 1},
    )
    body = body_for(request, "vllm")
    assert body["chat_template_kwargs"] == {"custom": 1, "enable_thinking": False}
    assert body["reasoning_effort"] == "low"
    # The client's own enable_thinking wins over the derived one.
    mine = msgspec.structs.replace(request, chat_template_kwargs={"enable_thinking": True})
    assert body_for(mine, "sglang")["chat_template_kwargs"] == {"enable_thinking": True}
    # Ollama ignores chat_template_kwargs, so it is not sent.
    assert "chat_template_kwargs" not in body_for(request, "ollama")
    off = ChatRequest(model="m", messages=(user("hi"),), reasoning=Reasoning(effort="none"))
    assert body_for(off, "llamacpp_server")["chat_template_kwargs"] == {"enable_thinking": False}


def test_extensions_pass_through_without_overriding_what_the_gateway_sets() -> None:
    request = ChatRequest(
        model="m",
        messages=(user("hi"),),
        sampling=Sampling(temperature=0.2),
        extensions={
            "guided_regex": "[a-z]+",
            "stream": False,
            "model": "other",
            "temperature": 1.5,
            "stream_options": {"include_usage": False},
        },
    )
    body = body_for(request)
    assert body["guided_regex"] == "[a-z]+"
    assert body["stream"] is True
    assert body["model"] == "up/model"
    assert body["temperature"] == 0.2
    assert body["stream_options"] == {"include_usage": True}


# --------------------------------------------------------------------------- SSE parser


def parse_all(parts: list[bytes]) -> list[tuple[str | None, bytes]]:
    parser = SSEParser()
    out = []
    for part in parts:
        out.extend(parser.feed(part))
    out.extend(parser.close())
    return out


SAMPLE = (
    b": keepalive\n\n"
    b'data: {"a": 1}\n\n'
    b"event: error\r\n"
    b'data: {"error":\r\n'
    b'data:  "x"}\r\n'
    b"\r\n"
    b"id: 7\n"
    b"retry: 100\n"
    b"data:no-space\n\n"
    b"data: [DONE]\n\n"
)
SAMPLE_EVENTS = [
    (None, b'{"a": 1}'),
    ("error", b'{"error":\n "x"}'),
    (None, b"no-space"),
    (None, b"[DONE]"),
]


def test_sse_parser_handles_comments_crlf_multiline_data_and_event_names() -> None:
    assert parse_all([SAMPLE]) == SAMPLE_EVENTS


def test_sse_parser_byte_by_byte_equals_whole() -> None:
    assert parse_all([SAMPLE[i : i + 1] for i in range(len(SAMPLE))]) == SAMPLE_EVENTS


def test_sse_parser_flushes_an_event_without_a_final_blank_line() -> None:
    assert parse_all([b"data: last"]) == [(None, b"last")]
    assert parse_all([b"data: x\n"]) == [(None, b"x")]


line_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20
)


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[bytes, list[tuple[str | None, bytes]]]:
    stream = b""
    expected: list[tuple[str | None, bytes]] = []
    for _ in range(draw(st.integers(0, 6))):
        newline = draw(st.sampled_from([b"\n", b"\r\n"]))
        if draw(st.booleans()):
            stream += b": ping" + newline
        name = draw(st.none() | st.sampled_from(["error", "message"]))
        if name is not None:
            stream += b"event: " + name.encode() + newline
        lines = draw(st.lists(line_text, min_size=1, max_size=3))
        for line in lines:
            stream += b"data: " + line.encode() + newline
        stream += newline
        expected.append((name, b"\n".join(line.encode() for line in lines)))
    return stream, expected


@given(sse_streams(), st.lists(st.integers(0, 400), max_size=12))
def test_sse_parser_streamed_equals_whole(
    case: tuple[bytes, list[tuple[str | None, bytes]]], cuts: list[int]
) -> None:
    stream, expected = case
    points = sorted({min(cut, len(stream)) for cut in cuts})
    parts = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert parse_all([stream]) == expected
    assert parse_all(parts) == expected


# --------------------------------------------------------------------------- chunk translation


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
    events = translate(chunk({"content": "x"}), chunk(finish="stop", stop_reason="</answer>"))
    assert events[-1] == Stop("stop", "</answer>")
    events = translate(chunk({"content": "x"}), chunk(finish="stop", stop_reason=151645))
    assert events[-1] == Stop("stop", "151645")


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
    with pytest.raises(kind, match=message) as info:
        translator.feed(event, payload)
    assert type(info.value) is kind


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


# --------------------------------------------------------------------------- HTTP errors


def error(status: int, body: Any, retry_after: str | None = None) -> ModelportError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return error_for_status(
        status, raw, upstream="http://up:8000/v1", model="Qwen/Qwen3-8B", retry_after=retry_after
    )


@pytest.mark.parametrize(
    ("status", "body", "kind", "fragment"),
    [
        (
            400,
            {"error": {"message": "temperature must be >= 0"}},
            InvalidRequest,
            "temperature must be >= 0",
        ),
        (
            400,
            {
                "object": "error",
                "message": "This model's maximum context length is 40960 tokens. "
                "However, you requested 50000 tokens",
            },
            ContextLengthExceeded,
            "maximum context length is 40960",
        ),
        (
            400,
            {
                "error": {
                    "message": "the request exceeds the available context size",
                    "type": "exceed_context_size_error",
                }
            },
            ContextLengthExceeded,
            "context size",
        ),
        (
            422,
            {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]},
            InvalidRequest,
            "field required",
        ),
        (401, {"error": {"message": "Incorrect API key"}}, UpstreamError, "credentials"),
        (403, {"error": "forbidden"}, UpstreamError, "api_key"),
        (
            404,
            {"error": {"message": "The model `x` does not exist."}},
            UpstreamError,
            "'Qwen/Qwen3-8B'",
        ),
        (408, b"", UpstreamTimeout, "HTTP 408"),
        (504, b"<html>gateway timeout</html>", UpstreamTimeout, "gateway timeout"),
        (500, {"message": "CUDA out of memory"}, UpstreamError, "CUDA out of memory"),
        (502, b"", UpstreamError, "HTTP 502"),
    ],
)
def test_http_errors_map_onto_the_error_tree(
    status: int, body: Any, kind: type[ModelportError], fragment: str
) -> None:
    mapped = error(status, body)
    assert type(mapped) is kind
    assert fragment in mapped.message


def test_rate_limits_and_overload_carry_retry_after() -> None:
    limited = error(429, {"error": {"message": "too many"}}, retry_after="7")
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0
    busy = error(503, {"error": {"message": "busy"}}, retry_after="1.5")
    assert isinstance(busy, Overloaded) and busy.retry_after == 1.5
    assert error(429, b"", retry_after=None).retry_after is None


def test_retry_after_as_an_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT") is None  # no clock, no guess
    assert parse_retry_after("soon", now=0.0) is None


def test_error_detail_reads_the_usual_shapes() -> None:
    assert error_detail(b'{"error": {"message": "m1", "type": "t"}}') == "m1"
    assert error_detail(b'{"error": "m2"}') == "m2"
    assert error_detail(b'{"object": "error", "message": "m3"}') == "m3"
    assert error_detail(b'{"detail": "m4"}') == "m4"
    assert error_detail(b"plain text") == "plain text"
    assert error_detail(b"   ") is None
    long = error_detail(b"x" * 5000)
    assert long is not None and len(long) < 600

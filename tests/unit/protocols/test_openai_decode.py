"""Decoding OpenAI chat requests: every documented parameter, its range, and clear 400s."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from modelport.core.errors import InvalidRequest
from modelport.core.types import (
    ImagePart,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from modelport.protocols.openai.decode import decode_chat_request

BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def decode(**fields: Any) -> Any:
    return decode_chat_request(msgspec.json.encode({**BASE, **fields}))


def rejects(param: str, **fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        decode(**fields)
    assert info.value.param == param, info.value.message
    assert info.value.status == 400
    return info.value


def test_minimal_request() -> None:
    request, options = decode()
    assert request.model == "m"
    assert request.messages[0].parts == (TextPart("hi"),)
    assert not options.stream and not options.include_usage


def test_every_sampling_parameter_reaches_the_canonical_request() -> None:
    request, _ = decode(
        temperature=0.3,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        top_a=0.1,
        frequency_penalty=-1.5,
        presence_penalty=2,
        repetition_penalty=1.1,
        seed=7,
        logit_bias={"42": -100},
        stop=["\n\n", "END"],
        max_tokens=64,
    )
    s = request.sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p, s.top_a) == (0.3, 0.9, 40, 0.05, 0.1)
    assert (s.frequency_penalty, s.presence_penalty, s.repetition_penalty) == (-1.5, 2.0, 1.1)
    assert s.seed == 7 and s.logit_bias == {42: -100.0} and s.stop == ("\n\n", "END")
    assert request.max_output_tokens == 64


def test_explicit_zeros_are_kept_not_dropped() -> None:
    request, _ = decode(temperature=0, top_k=0, presence_penalty=0)
    assert request.sampling.temperature == 0.0
    assert request.sampling.top_k == 0
    assert request.sampling.presence_penalty == 0.0


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("temperature", 2.5),
        ("temperature", -0.1),
        ("top_p", 1.5),
        ("top_k", -1),
        ("frequency_penalty", 3),
        ("presence_penalty", -2.5),
        ("repetition_penalty", 2.1),
        ("min_p", 1.2),
        ("top_a", -0.5),
        ("seed", 1.5),
        ("max_tokens", 0),
        ("max_completion_tokens", -3),
        ("top_logprobs", 21),
        ("logprobs", "yes"),
        ("temperature", "hot"),
        ("stop", 5),
        ("parallel_tool_calls", "no"),
        ("verbosity", "extreme"),
        ("structured_outputs", 1),
        ("n", 0),
    ],
)
def test_out_of_range_values_name_the_field(param: str, value: Any) -> None:
    error = rejects(param, **{param: value})
    assert param in error.message


def test_logit_bias_values_and_keys_are_checked() -> None:
    rejects("logit_bias", logit_bias={"42": 101})
    rejects("logit_bias", logit_bias={"hello": 1})


def test_top_logprobs_requires_logprobs() -> None:
    rejects("top_logprobs", top_logprobs=3)
    request, _ = decode(logprobs=True, top_logprobs=3)
    assert request.logprobs and request.top_logprobs == 3


def test_n_other_than_one_is_rejected() -> None:
    rejects("n", n=2)


def test_reasoning_forms() -> None:
    request, _ = decode(reasoning={"effort": "high", "max_tokens": 2048, "exclude": True})
    assert request.reasoning.effort == "high"
    assert request.reasoning.max_tokens == 2048 and request.reasoning.exclude
    request, _ = decode(reasoning_effort="low")
    assert request.reasoning.effort == "low"
    request, _ = decode(reasoning={"enabled": False})
    assert request.reasoning.enabled is False
    rejects("reasoning.effort", reasoning={"effort": "max-ish"})
    rejects("reasoning_effort", reasoning_effort="turbo")


def test_response_formats() -> None:
    request, _ = decode(response_format={"type": "json_object"})
    assert request.response_format.type == "json_object"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request, _ = decode(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": schema, "strict": True},
        }
    )
    assert request.response_format.schema == schema and request.response_format.strict
    rejects("response_format.type", response_format={"type": "yaml"})
    rejects(
        "response_format.json_schema.schema",
        response_format={"type": "json_schema", "json_schema": {"name": "x"}},
    )


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
]


def test_tools_and_tool_choice() -> None:
    request, _ = decode(
        tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    assert request.tools[0].name == "get_weather"
    assert request.tool_choice.mode == "named" and request.tool_choice.name == "get_weather"
    for mode in ("none", "auto", "required"):
        request, _ = decode(tools=TOOLS, tool_choice=mode)
        assert request.tool_choice.mode == mode
    rejects(
        "tool_choice", tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}
    )
    rejects("tool_choice", tool_choice="required")
    rejects("tool_choice", tools=TOOLS, tool_choice="sometimes")
    rejects(
        "tools[0].function.name", tools=[{"type": "function", "function": {"name": "bad name!"}}]
    )
    request, _ = decode(tools=TOOLS, parallel_tool_calls=False)
    assert request.parallel_tool_calls is False


def test_message_shapes_real_clients_send() -> None:
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}],
        },
        {
            "role": "assistant",
            "reasoning_content": "thinking...",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"x":1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "assistant", "content": None, "reasoning": "r2"},
        {"role": "assistant", "content": ""},
        {"role": "assistant"},
        {"role": "user", "content": "next"},
    ]
    request, _ = decode(messages=messages)
    m = request.messages
    assert m[0].role == "system" and m[0].parts == (TextPart("be brief"),)
    assert m[1].parts == (TextPart("a"), TextPart("b"))
    assert isinstance(m[2].parts[0], ImagePart)
    assert m[3].parts == (ReasoningPart("thinking..."), ToolCallPart("call_1", "f", '{"x":1}'))
    assert m[4].parts == (ToolResultPart("call_1", "42"),)
    assert m[5].parts == (ReasoningPart("r2"),)
    assert m[6].parts == () and m[7].parts == ()


def test_tool_message_needs_its_call_id() -> None:
    rejects(
        "messages[1].tool_call_id", messages=[BASE["messages"][0], {"role": "tool", "content": "x"}]
    )


def test_bad_messages_name_the_field() -> None:
    rejects("messages", messages=[])
    rejects("messages[0].role", messages=[{"role": "robot", "content": "x"}])
    rejects(
        "messages[0].content[0].type", messages=[{"role": "user", "content": [{"type": "audio"}]}]
    )
    rejects("messages[0].content", messages=[{"role": "user", "content": 5}])
    rejects("model", model="")
    rejects("model", model=None)


def test_body_must_be_a_json_object() -> None:
    for body in (b"", b"{", b"[1,2]", b"null", b"\xff"):
        with pytest.raises(InvalidRequest):
            decode_chat_request(body)
    with pytest.raises(InvalidRequest, match="model"):
        decode_chat_request(b'{"messages": [{"role": "user", "content": "x"}]}')


def test_unknown_fields_become_extensions() -> None:
    request, _ = decode(provider={"order": ["a"]}, transforms=[], metadata={"k": "v"})
    assert request.extensions == {
        "provider": {"order": ["a"]},
        "transforms": [],
        "metadata": {"k": "v"},
    }


def test_stream_options_and_template_kwargs() -> None:
    request, options = decode(
        stream=True,
        stream_options={"include_usage": True},
        chat_template_kwargs={"enable_thinking": False},
    )
    assert options.stream and options.include_usage
    assert request.chat_template_kwargs == {"enable_thinking": False}
    assert request.extensions == {}
    # The engines' own switch counts as reasoning.enabled (defaults, budgets, Ollama's
    # soft switch follow it); an explicit reasoning setting wins.
    assert request.reasoning.enabled is False
    explicit, _ = decode(
        chat_template_kwargs={"enable_thinking": False}, reasoning={"enabled": True}
    )
    assert explicit.reasoning.enabled is True


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    request, _ = decode(max_tokens=100, max_completion_tokens=50)
    assert request.max_output_tokens == 50

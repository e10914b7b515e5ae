"""Building upstream request bodies from a canonical ChatRequest, per dialect. Pure code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

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
from modelport.protocols.openai.dialects import DIALECTS, DialectRules
from modelport.protocols.openai.upstream_request import build_request_body


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
        ("llama_cpp_python", {"top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1}),
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
    body = body_for(request, "vllm", enable_thinking=False)
    assert body["chat_template_kwargs"] == {"custom": 1, "enable_thinking": False}
    assert body["reasoning_effort"] == "low"
    # The client's own enable_thinking wins over the derived one.
    mine = msgspec.structs.replace(request, chat_template_kwargs={"enable_thinking": True})
    sglang = body_for(mine, "sglang", enable_thinking=False)
    assert sglang["chat_template_kwargs"] == {"enable_thinking": True}
    # Ollama ignores chat_template_kwargs, so it is not sent.
    assert "chat_template_kwargs" not in body_for(request, "ollama", enable_thinking=False)
    # A model without the switch (the backend passes None) gets none.
    assert body_for(request, "vllm")["chat_template_kwargs"] == {"custom": 1}


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


# --------------------------------------------------------------------------- the docs

BACKENDS_DOC = Path(__file__).resolve().parents[3] / "docs" / "backends.md"


def _documented_dialects() -> dict[str, list[str]]:
    section = BACKENDS_DOC.read_text().split("### Dialects", 1)[1].split("\n### ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 7:
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_dialect_table_in_the_docs_matches_the_code() -> None:
    expected: dict[str, list[str]] = {}
    for name, rules in DIALECTS.items():
        # The docs describe enable_thinking as riding inside chat_template_kwargs.
        assert rules.thinking_switch == rules.chat_template_kwargs, name
        field = rules.reasoning_field
        sampling = [
            f"`{key}`" if wire == key else f"`{key}` as `{wire}`"
            for key, wire in rules.sampling_names.items()
        ]
        if rules.soft_switch:
            off = "`/no_think` appended to the last user message"
        else:
            off = "`enable_thinking: false`" if rules.thinking_switch else "not sent"
        expected[name] = [
            f"`{field}`" if field else "not sent (dropped from the history)",
            "yes" if rules.chat_template_kwargs else "no",
            ", ".join(sampling) or "none",
            f"`{'.'.join(rules.budget_path)}`"
            if rules.budget_path
            else ("two passes" if rules.raw_prompts else "not enforced"),
            off,
            _endpoints(rules),
        ]
    documented = _documented_dialects()
    for row in documented.values():
        row[3] = row[3].split(" (", 1)[0]  # the budget cell may end with a note in brackets
    assert documented == expected


def _endpoints(rules: DialectRules) -> str:
    """The docs' cell for the engine's own tokenizer endpoints."""
    shown = [f"`POST {rules.tokenize.path}`"] if rules.tokenize else []
    if rules.apply_template:
        shown.append(f"`POST {rules.apply_template}`")
    return ", ".join(shown) or "none"


# --------------------------------------------------------------------------- thinking


@pytest.mark.parametrize(
    ("dialect", "where"),
    [
        ("vllm", ("thinking_token_budget",)),
        ("sglang", ("custom_params", "thinking_budget")),
        ("llamacpp_server", ("thinking_budget_tokens",)),
    ],
)
def test_the_thinking_budget_goes_where_each_engine_reads_it(
    dialect: str, where: tuple[str, ...]
) -> None:
    body: Any = body_for(
        ChatRequest(model="m", messages=(user("hi"),)), dialect, thinking_budget=300
    )
    for key in where:
        body = body[key]
    assert body == 300


@pytest.mark.parametrize("dialect", ["generic", "raw", "ollama", "llama_cpp_python"])
def test_engines_without_a_budget_field_get_none(dialect: str) -> None:
    body = body_for(ChatRequest(model="m", messages=(user("hi"),)), dialect, thinking_budget=300)
    assert "300" not in json.dumps(body)


def test_ollama_gets_the_no_think_soft_switch_in_the_last_user_message() -> None:
    request = ChatRequest(
        model="m",
        messages=(user("first"), Message("assistant", (TextPart("ok"),)), user("second")),
        reasoning=Reasoning(effort="none"),
    )
    body = body_for(request, "ollama", enable_thinking=False)
    assert [m["content"] for m in body["messages"]] == ["first", "ok", "second /no_think"]
    assert "chat_template_kwargs" not in body
    # Other engines take the template switch instead and their messages stay as written.
    vllm = body_for(request, "vllm", enable_thinking=False)
    assert vllm["messages"][-1]["content"] == "second"
    assert vllm["chat_template_kwargs"] == {"enable_thinking": False}


@pytest.mark.parametrize(
    ("dialect", "effort", "sent"),
    [
        ("vllm", "xhigh", "high"),
        ("sglang", "minimal", "low"),
        ("llamacpp_server", "none", None),
        ("llama_cpp_python", "high", None),  # no such field: not sent
        ("ollama", "medium", "medium"),
        ("generic", "xhigh", "xhigh"),  # OpenRouter-style providers take every effort
        ("raw", "minimal", "minimal"),  # so does OpenAI
    ],
)
def test_reasoning_effort_is_sent_as_the_engine_accepts_it(
    dialect: str, effort: str, sent: str | None
) -> None:
    request = ChatRequest(
        model="m",
        messages=(user("hi"),),
        reasoning=Reasoning(effort=effort),  # type: ignore[arg-type]
    )
    assert body_for(request, dialect).get("reasoning_effort") == sent


def test_llama_cpp_python_gets_only_the_fields_its_server_reads() -> None:
    # llama-cpp-python's server (llama_cpp/server/types.py) drops keys it does not know:
    # chat_template_kwargs, reasoning_effort, reasoning on messages. Thinking is turned off
    # with Qwen's soft switch instead.
    request = ChatRequest(
        model="m",
        messages=(
            user("first"),
            Message("assistant", (ReasoningPart("thought"), TextPart("ok"))),
            user("second"),
        ),
        reasoning=Reasoning(effort="none"),
        chat_template_kwargs={"custom": 1},
    )
    body = body_for(request, "llama_cpp_python", enable_thinking=False)
    assert body["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second /no_think"},
    ]
    assert not {"chat_template_kwargs", "reasoning_effort"} & body.keys()


def test_the_engines_tokenizer_endpoints() -> None:
    llamacpp, python = DIALECTS["llamacpp_server"], DIALECTS["llama_cpp_python"]
    assert llamacpp.tokenize is not None and python.tokenize is not None
    assert (llamacpp.tokenize.path, llamacpp.tokenize.wire) == ("/tokenize", "llamacpp")
    assert llamacpp.apply_template == "/apply-template"
    assert (python.tokenize.path, python.tokenize.wire) == ("/extras/tokenize", "llama_cpp_python")
    assert python.apply_template is None
    for name in ("generic", "vllm", "sglang", "ollama", "raw"):
        assert DIALECTS[name].tokenize is None and DIALECTS[name].apply_template is None  # type: ignore[index]

"""Decoding Anthropic Messages requests: what real clients send, and 400s naming the field."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from modelport.core.errors import InvalidRequest
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
from modelport.protocols.anthropic.decode import (
    MessagesOptions,
    decode_count_tokens_request,
    decode_messages_request,
)

BASE: dict[str, Any] = {
    "model": "qwen3-8b",
    "max_tokens": 256,
    "messages": [{"role": "user", "content": "hi"}],
}


def decode(**fields: Any) -> tuple[ChatRequest, MessagesOptions]:
    return decode_messages_request(msgspec.json.encode({**BASE, **fields}))


def rejects(param: str, body: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        decode_messages_request(msgspec.json.encode(body))
    assert info.value.param == param, info.value.message
    assert info.value.status == 400
    assert info.value.message.startswith(f"{param}: ")
    return info.value


def rejects_messages(param: str, *messages: dict[str, Any]) -> InvalidRequest:
    return rejects(param, {**BASE, "messages": list(messages)})


READ_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"file_path": {"type": "string"}, "limit": {"type": "integer"}},
    "required": ["file_path"],
    "additionalProperties": False,
}
BASH_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"command": {"type": "string"}},
    "required": ["command"],
    "additionalProperties": False,
}
BILLING = "x-anthropic-billing-header: cc_version=2.1.330.572; cc_entrypoint=sdk-cli;"
USER_ID = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": "5e1d-…"})


def test_a_claude_code_first_turn() -> None:
    body = {
        "model": "qwen3-8b",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": BILLING},
            {
                "type": "text",
                "text": "You are Claude Code.",
                "cache_control": {"type": "ephemeral"},
            },
            {
                "type": "text",
                "text": "Use the tools below.",
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            },
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>CLAUDE.md</system-reminder>"},
                    {
                        "type": "text",
                        "text": "Read README.md",
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
            },
            {"role": "system", "content": [{"type": "text", "text": "Platform: linux"}]},
        ],
        "tools": [
            {"name": "Read", "description": "Reads a file.", "input_schema": READ_SCHEMA},
            {"name": "Bash", "description": "Runs a command.", "input_schema": BASH_SCHEMA},
            {
                "name": "DeferredToolPlaceholder",
                "description": "Loaded by ToolSearch.",
                "input_schema": {"type": "object", "properties": {}},
                "defer_loading": True,
            },
        ],
        "metadata": {"user_id": USER_ID},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "safeguards": [{"type": "dangerous_tool_use"}],
    }
    request, options = decode_messages_request(msgspec.json.encode(body))
    assert request == ChatRequest(
        model="qwen3-8b",
        messages=(
            Message(
                "system",
                (
                    TextPart(
                        "x-anthropic-billing-header: cc_version=2.1.330.572; cc_entrypoint=sdk-cli;"
                    ),
                    TextPart("You are Claude Code."),
                    TextPart("Use the tools below."),
                ),
            ),
            Message(
                "user",
                (
                    TextPart("<system-reminder>CLAUDE.md</system-reminder>"),
                    TextPart("Read README.md"),
                ),
            ),
            Message("system", (TextPart("Platform: linux"),)),
        ),
        tools=(
            Tool("Read", "Reads a file.", READ_SCHEMA),
            Tool("Bash", "Runs a command.", BASH_SCHEMA),
            Tool(
                "DeferredToolPlaceholder",
                "Loaded by ToolSearch.",
                {"type": "object", "properties": {}},
            ),
        ),
        max_output_tokens=32000,
        reasoning=Reasoning(effort="high", enabled=True, exclude=True),
    )
    assert request.extensions == {}
    assert options == MessagesOptions(stream=True, metadata_user_id=USER_ID)


def test_a_claude_code_tool_round_trip() -> None:
    png = "iVBORw0KGgo="
    messages = [
        {"role": "user", "content": "Read café.txt and the screenshot"},
        {"role": "system", "content": "Platform: linux"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should read it.", "signature": "sig-1"},
                {"type": "text", "text": "Reading."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "Read",
                    "input": {"file_path": "/tmp/café.txt", "limit": 2},
                },
                {"type": "tool_use", "id": "toolu_02", "name": "Bash", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01",
                    "content": [
                        {"type": "text", "text": "line 1"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": png},
                        },
                        {"type": "text", "text": "line 2"},
                    ],
                    "cache_control": {"type": "ephemeral"},
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_02",
                    "content": "command not found",
                    "is_error": True,
                },
                {"type": "text", "text": "Go on."},
            ],
        },
    ]
    request, _ = decode(messages=messages)
    assert request.messages == (
        Message("user", (TextPart("Read café.txt and the screenshot"),)),
        Message("system", (TextPart("Platform: linux"),)),
        Message(
            "assistant",
            (
                ReasoningPart("I should read it.", "sig-1"),
                TextPart("Reading."),
                ToolCallPart("toolu_01", "Read", '{"file_path": "/tmp/café.txt", "limit": 2}'),
                ToolCallPart("toolu_02", "Bash", "{}"),
            ),
        ),
        Message(
            "user",
            (
                ToolResultPart("toolu_01", "line 1\nline 2"),
                ImagePart(url=f"data:image/png;base64,{png}"),
                ToolResultPart("toolu_02", "command not found", is_error=True),
                TextPart("Go on."),
            ),
        ),
    )


def test_an_anthropic_sdk_request_with_a_thinking_budget() -> None:
    request, options = decode(
        max_tokens=4096,
        system="Be brief.",
        thinking={"type": "enabled", "budget_tokens": 2048},
        tools=[
            {
                "name": "get_weather",
                "description": "Weather for a city.",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            }
        ],
        temperature=1,
        top_p=0.95,
        top_k=20,
        stop_sequences=["", "END"],
        stream=False,
    )
    assert request.messages == (
        Message("system", (TextPart("Be brief."),)),
        Message("user", (TextPart("hi"),)),
    )
    assert request.tools[0].parameters["required"] == ["city"]
    assert request.tool_choice == ToolChoice("auto") and request.parallel_tool_calls
    assert request.reasoning == Reasoning(max_tokens=2048, enabled=True)
    assert request.sampling == Sampling(temperature=1.0, top_p=0.95, top_k=20, stop=("END",))
    assert request.max_output_tokens == 4096
    assert options == MessagesOptions(stream=False, metadata_user_id=None)


def test_thinking_blocks_come_back_with_or_without_a_signature() -> None:
    request, _ = decode(
        messages=[
            {"role": "user", "content": "q1"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "a", "signature": "Eo8BCkYIBhgC"},
                    {"type": "thinking", "thinking": "b", "signature": ""},
                    {"type": "thinking", "thinking": "c"},
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                    {"type": "text", "text": "answer"},
                ],
            },
            {"role": "user", "content": "q2"},
        ]
    )
    assert request.messages[1].parts == (
        ReasoningPart("a", "Eo8BCkYIBhgC"),
        ReasoningPart("b", None),
        ReasoningPart("c", None),
        TextPart("answer"),
    )


def test_server_tool_blocks_in_history_are_dropped() -> None:
    request, _ = decode(
        messages=[
            {"role": "user", "content": "news?"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "server_tool_use",
                        "id": "srvtoolu_1",
                        "name": "web_search",
                        "input": {"query": "news"},
                    },
                    {
                        "type": "web_search_tool_result",
                        "tool_use_id": "srvtoolu_1",
                        "content": [{"type": "web_search_result", "url": "https://a.example"}],
                    },
                    {"type": "code_execution_tool_result", "tool_use_id": "x", "content": {}},
                    {"type": "text", "text": "Here is the news.", "citations": [{"type": "x"}]},
                ],
            },
        ]
    )
    assert request.messages[1] == Message("assistant", (TextPart("Here is the news."),))


def test_images_by_url_and_by_data() -> None:
    request, _ = decode(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://a.example/c.jpg"}},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/webp", "data": "UklG"},
                    },
                    {"type": "text", "text": "Compare them."},
                ],
            }
        ]
    )
    assert request.messages[0].parts == (
        ImagePart(url="https://a.example/c.jpg"),
        ImagePart(url="data:image/webp;base64,UklG"),
        TextPart("Compare them."),
    )


def test_tool_results_without_content_and_with_tool_references() -> None:
    request, _ = decode(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [
                            {"type": "tool_reference", "tool_name": "mcp__github__list_issues"},
                            {"type": "tool_reference", "tool_name": "mcp__github__get_issue"},
                        ],
                    },
                ],
            }
        ]
    )
    assert request.messages[0].parts == (
        ToolResultPart("toolu_1", ""),
        ToolResultPart("toolu_2", "mcp__github__list_issues\nmcp__github__get_issue"),
    )


@pytest.mark.parametrize("system", ["", [], [{"type": "text", "text": ""}]])
def test_an_empty_system_prompt_adds_no_system_message(system: Any) -> None:
    request, _ = decode(system=system)
    assert [message.role for message in request.messages] == ["user"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, Reasoning(enabled=False)),
        ({"thinking": {"type": "disabled"}}, Reasoning(enabled=False)),
        ({"thinking": {"type": "adaptive"}}, Reasoning(enabled=True)),
        (
            {"thinking": {"type": "adaptive", "display": "summarized"}},
            Reasoning(enabled=True),
        ),
        ({"thinking": {"type": "between_tools"}}, Reasoning(enabled=True)),
        # Below Anthropic's own minimum of 1024: fine for a small local model.
        (
            {"thinking": {"type": "enabled", "budget_tokens": 0}},
            Reasoning(max_tokens=0, enabled=True),
        ),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 300, "display": "omitted"}},
            Reasoning(max_tokens=300, enabled=True, exclude=True),
        ),
        ({"output_config": {"effort": "max"}}, Reasoning(effort="xhigh", enabled=False)),
        ({"output_config": {"effort": "xhigh"}}, Reasoning(effort="xhigh", enabled=False)),
        (
            {"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}},
            Reasoning(effort="low", enabled=True),
        ),
        (
            {
                "thinking": {"type": "enabled", "budget_tokens": 4096},
                "output_config": {"effort": "medium"},
            },
            Reasoning(effort="medium", max_tokens=4096, enabled=True),
        ),
        (
            {"output_config": {"format": {"type": "json_schema", "schema": {}}}},
            Reasoning(enabled=False),
        ),
    ],
)
def test_thinking_and_effort(fields: dict[str, Any], expected: Reasoning) -> None:
    request, _ = decode(**fields)
    assert request.reasoning == expected


TOOLS = [
    {"name": "a", "input_schema": {"type": "object"}},
    {"name": "b", "input_schema": {"type": "object"}},
]


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, ToolChoice("auto"), True),
        ({"type": "any"}, ToolChoice("required"), True),
        ({"type": "tool", "name": "b"}, ToolChoice("named", "b"), True),
        ({"type": "none"}, ToolChoice("none"), True),
        ({"type": "auto", "disable_parallel_tool_use": True}, ToolChoice("auto"), False),
        ({"type": "any", "disable_parallel_tool_use": True}, ToolChoice("required"), False),
        (
            {"type": "tool", "name": "a", "disable_parallel_tool_use": False},
            ToolChoice("named", "a"),
            True,
        ),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: ToolChoice, parallel: bool) -> None:
    request, _ = decode(tools=TOOLS, tool_choice=choice)
    assert request.tool_choice == expected
    assert request.parallel_tool_calls is parallel


def test_strict_tools_stay_strict() -> None:
    request, _ = decode(tools=[{"name": "a", "input_schema": {"type": "object"}, "strict": True}])
    assert request.tools == (Tool("a", None, {"type": "object"}, strict=True),)


def test_fields_only_anthropic_acts_on_are_ignored() -> None:
    plain, plain_options = decode(tools=TOOLS)
    request, options = decode(
        tools=[
            {
                **TOOLS[0],
                "defer_loading": True,
                "cache_control": {"type": "ephemeral"},
                "eager_input_streaming": True,
                "input_examples": [{}],
                "type": "custom",
            },
            TOOLS[1],
        ],
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "hi",
                        "cache_control": {"type": "ephemeral"},
                        "citations": None,
                    }
                ],
            }
        ],
        cache_control={"type": "ephemeral"},
        container="container_1",
        context_management={"edits": []},
        diagnostics={"previous_message_id": "msg_1"},
        inference_geo="us",
        mcp_servers=[{"type": "url", "url": "https://mcp.example", "name": "x"}],
        safeguards=[{"type": "dangerous_tool_use"}],
        service_tier="auto",
        speed="fast",
        metadata={"user_id": None, "other": 1},
        output_config={"effort": None, "task_budget": 5},
    )
    assert request == plain
    assert options == plain_options
    assert request.extensions == {}


def test_count_tokens_takes_a_prompt_without_max_tokens() -> None:
    body = {
        "model": "qwen3-8b",
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "foo"}],
        "tools": [{"name": "Read", "description": "Reads a file.", "input_schema": READ_SCHEMA}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "temperature": 5,  # not a count_tokens field: ignored, not range-checked
        "stream": "yes",
    }
    request = decode_count_tokens_request(msgspec.json.encode(body))
    assert request == ChatRequest(
        model="qwen3-8b",
        messages=(Message("system", (TextPart("sys"),)), Message("user", (TextPart("foo"),))),
        tools=(Tool("Read", "Reads a file.", READ_SCHEMA),),
        reasoning=Reasoning(max_tokens=1024, enabled=True),
    )
    assert request.max_output_tokens is None


def test_count_tokens_errors_name_the_field() -> None:
    for body, param in [
        ({"model": "m", "messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "document"}]}]},
            "messages.0.content.0.type",
        ),
    ]:
        with pytest.raises(InvalidRequest) as info:
            decode_count_tokens_request(msgspec.json.encode(body))
        assert info.value.param == param


# 400s: each names the field the way Anthropic's own errors do.


@pytest.mark.parametrize(
    ("param", "fields"),
    [
        ("max_tokens", {"max_tokens": 0}),
        ("max_tokens", {"max_tokens": "many"}),
        ("model", {"model": ""}),
        ("model", {"model": None}),
        ("messages", {"messages": []}),
        ("messages", {"messages": "hi"}),
        ("system", {"system": 5}),
        ("temperature", {"temperature": 1.5}),
        ("temperature", {"temperature": -0.1}),
        ("top_p", {"top_p": 2}),
        ("top_k", {"top_k": -1}),
        ("stop_sequences", {"stop_sequences": "END"}),
        ("stop_sequences.1", {"stop_sequences": ["a", 1]}),
        ("stream", {"stream": "yes"}),
        ("metadata.user_id", {"metadata": {"user_id": 5}}),
        ("thinking.type", {"thinking": {"type": "sometimes"}}),
        ("thinking.budget_tokens", {"thinking": {"type": "enabled"}}),
        ("thinking.budget_tokens", {"thinking": {"type": "enabled", "budget_tokens": -1}}),
        ("output_config.effort", {"output_config": {"effort": "extreme"}}),
        ("tool_choice.type", {"tools": TOOLS, "tool_choice": {"type": "sometimes"}}),
        ("tool_choice.type", {"tool_choice": {"type": "any"}}),
        ("tool_choice.name", {"tools": TOOLS, "tool_choice": {"type": "tool"}}),
        ("tool_choice.name", {"tools": TOOLS, "tool_choice": {"type": "tool", "name": "c"}}),
        ("tool_choice.name", {"tool_choice": {"type": "tool", "name": "a"}}),
        ("tools.0.name", {"tools": [{"input_schema": {"type": "object"}}]}),
        ("tools.0.name", {"tools": [{"name": "", "input_schema": {"type": "object"}}]}),
        ("tools.0.input_schema", {"tools": [{"name": "a"}]}),
        ("tools.0.input_schema", {"tools": [{"name": "a", "input_schema": "object"}]}),
    ],
)
def test_bad_top_level_fields_are_named(param: str, fields: dict[str, Any]) -> None:
    rejects(param, {**BASE, **fields})


def test_required_fields_are_named() -> None:
    for field in ("model", "messages", "max_tokens"):
        body = {key: value for key, value in BASE.items() if key != field}
        error = rejects(field, body)
        assert error.message == f"{field}: Field required"


def test_duplicate_tool_names_are_rejected() -> None:
    error = rejects("tools.2.name", {**BASE, "tools": [*TOOLS, TOOLS[0]]})
    assert "unique" in error.message


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
    ],
)
def test_anthropic_server_tools_are_refused(tool: dict[str, Any]) -> None:
    error = rejects("tools.1", {**BASE, "tools": [TOOLS[0], tool]})
    assert "not available on this server" in error.message


def test_unsupported_block_types_name_their_path() -> None:
    error = rejects_messages(
        "messages.3.content.1.type",
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "system", "content": "c"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "summarise"},
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                },
            ],
        },
    )
    assert "'document'" in error.message and "not supported" in error.message
    rejects_messages("messages.0.content.0.type", {"role": "user", "content": [{"type": "audio"}]})
    rejects_messages(
        "messages.0.content.0.type", {"role": "user", "content": [{"type": "search_result"}]}
    )
    rejects_messages(
        "messages.0.content.0.type",
        {"role": "assistant", "content": [{"type": "container_upload", "file_id": "f"}]},
    )


@pytest.mark.parametrize(
    ("role", "block"),
    [
        ("assistant", {"type": "tool_result", "tool_use_id": "t", "content": "x"}),
        ("assistant", {"type": "image", "source": {"type": "url", "url": "https://a.example"}}),
        ("user", {"type": "tool_use", "id": "t", "name": "a", "input": {}}),
        ("user", {"type": "thinking", "thinking": "hm", "signature": "s"}),
        ("user", {"type": "redacted_thinking", "data": "x"}),
        ("user", {"type": "web_search_tool_result", "tool_use_id": "t", "content": []}),
        ("user", {"type": "server_tool_use", "id": "t", "name": "web_search", "input": {}}),
    ],
)
def test_blocks_in_the_wrong_role_are_rejected(role: str, block: dict[str, Any]) -> None:
    error = rejects_messages(
        "messages.1.content.0.type",
        {"role": "user", "content": "hi"},
        {"role": role, "content": [block]},
    )
    assert f"not allowed in {role} messages" in error.message


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("messages.0.role", {"role": "robot", "content": "x"}),
        ("messages.0.role", {"content": "x"}),
        ("messages.0.content", {"role": "user"}),
        ("messages.0.content", {"role": "user", "content": 5}),
        ("messages.0.content.0", {"role": "user", "content": ["hi"]}),
        ("messages.0.content.0.type", {"role": "user", "content": [{"text": "hi"}]}),
        ("messages.0.content.0.type", {"role": "user", "content": [{"type": 1}]}),
        ("messages.0.content.0.text", {"role": "user", "content": [{"type": "text"}]}),
        (
            "messages.0.content.0.source.type",
            {
                "role": "user",
                "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
            },
        ),
        (
            "messages.0.content.0.source.data",
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png"}}
                ],
            },
        ),
        (
            "messages.0.content.0.tool_use_id",
            {"role": "user", "content": [{"type": "tool_result", "content": "x"}]},
        ),
        (
            "messages.0.content.0.is_error",
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "no"}],
            },
        ),
        (
            "messages.0.content.0.content.1.type",
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "text", "text": "a"}, {"type": "document"}],
                    }
                ],
            },
        ),
        (
            "messages.0.content.0.content.0.text",
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text"}]}
                ],
            },
        ),
        (
            "messages.0.content.0.id",
            {"role": "assistant", "content": [{"type": "tool_use", "name": "a", "input": {}}]},
        ),
        (
            "messages.0.content.0.input",
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "a", "input": "{}"}],
            },
        ),
        (
            "messages.0.content.0.thinking",
            {"role": "assistant", "content": [{"type": "thinking", "signature": "s"}]},
        ),
        (
            "messages.0.content.0.type",
            {
                "role": "system",
                "content": [{"type": "tool_use", "id": "t", "name": "a", "input": {}}],
            },
        ),
    ],
)
def test_bad_messages_are_named(param: str, message: dict[str, Any]) -> None:
    rejects_messages(param, message)


def test_system_blocks_must_be_text() -> None:
    rejects(
        "system.1.type",
        {
            **BASE,
            "system": [
                {"type": "text", "text": "a"},
                {"type": "image", "source": {"type": "url", "url": "https://a.example"}},
            ],
        },
    )
    rejects("system.0.text", {**BASE, "system": [{"type": "text"}]})


def test_the_body_must_be_a_json_object() -> None:
    for body in (b"", b"{", b"[1]", b"null", b"\xff"):
        with pytest.raises(InvalidRequest):
            decode_messages_request(body)
        with pytest.raises(InvalidRequest):
            decode_count_tokens_request(body)


@pytest.mark.parametrize("where", ["output_config", "output_format"])
def test_structured_output_becomes_a_json_schema_response_format(where: str) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    fmt = {"type": "json_schema", "schema": schema}
    extra = (
        {"output_config": {"format": fmt}} if where == "output_config" else {"output_format": fmt}
    )
    request, _ = decode_messages_request(
        json.dumps(
            {
                "model": "m",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}],
                **extra,
            }
        ).encode()
    )
    assert request.response_format == ResponseFormat(
        "json_schema", schema=schema, name="output", strict=True
    )

"""The Responses API's requests read into the chat pipeline's form: items, tools, formats."""

from __future__ import annotations

import json

import pytest

from modelport.core.errors import InvalidRequest
from modelport.protocols.openai.responses import decode_responses_request


def decode(**body: object) -> tuple[object, object, list[dict[str, object]]]:
    return decode_responses_request(json.dumps({"model": "m", "input": "hi", **body}).encode())


def test_function_and_namespace_tools_are_offered_and_hosted_ones_are_not() -> None:
    request, _, _ = decode(
        tools=[
            {"type": "function", "name": "a", "parameters": {"type": "object"}},
            {"type": "web_search", "external_web_access": False},
            {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "b"}]},
            {"type": "file_search", "vector_store_ids": ["x"]},
        ]
    )
    assert [tool.name for tool in request.tools] == ["a", "b"]  # type: ignore[attr-defined]


def test_items_become_turns_in_order_with_calls_and_their_outputs() -> None:
    request, _, conversation = decode(
        instructions="Be brief.",
        input=[
            {"role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
            {"role": "user", "content": "q"},
            {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "think"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2", "output": {"n": 2}},
        ],
    )
    roles = [message.role for message in request.messages]  # type: ignore[attr-defined]
    assert roles[0] == "system" and roles[-2:] == ["tool", "tool"]
    assert conversation[0]["role"] == "developer"  # the instructions are not stored with it
    assistant = conversation[2]
    assert [call["id"] for call in assistant["tool_calls"]] == ["c1", "c2"]  # one turn
    assert assistant["reasoning_content"] == "think"
    assert conversation[-1]["content"] == '{"n":2}'


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "function_call", "name": "f"}, "input[0].call_id"),
        ({"type": "function_call_output"}, "input[0].call_id"),
        ({"role": "robot", "content": "x"}, "input[0].role"),
        ({"type": "mystery"}, "input[0].type"),
        ({"role": "user", "content": [{"type": "input_audio"}]}, "input[0].content[0].type"),
        ({"type": "reasoning", "encrypted_content": "forged"}, "input[0].encrypted_content"),
    ],
)
def test_a_bad_item_is_a_400_naming_it(item: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode(input=[item])
    assert refused.value.param == param


def test_text_format_and_reasoning_map_onto_the_chat_fields() -> None:
    request, options, _ = decode(
        text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        reasoning={"effort": "low", "summary": "auto"},
        max_output_tokens=64,
    )
    assert request.response_format.type == "json_schema"  # type: ignore[attr-defined]
    assert request.max_output_tokens == 64  # type: ignore[attr-defined]
    assert options.reasoning_summary is True  # type: ignore[attr-defined]

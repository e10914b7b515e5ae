"""The generic tool format (`backends/generic_tools.py`): tools, calls and results written
into the messages of a template that knows no tools."""

from __future__ import annotations

import json

from modelport.backends.generic_tools import call_text, generic_messages

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tools_join_the_clients_system_message() -> None:
    out = generic_messages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], [TOOL]
    )
    assert [m["role"] for m in out] == ["system", "user"]
    system = out[0]["content"]
    assert system.startswith("Be brief.\n\n")
    assert json.dumps(TOOL) in system and "<tool_call>" in system


def test_without_a_system_message_one_is_added() -> None:
    out = generic_messages([{"role": "user", "content": "hi"}], [TOOL])
    assert [m["role"] for m in out] == ["system", "user"]


def test_calls_and_results_become_text_turns() -> None:
    out = generic_messages(
        [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "a",
                        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                    },
                    {
                        "id": "b",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "sunny"},
            {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "rain"}]},
            {"role": "user", "content": "thanks"},
        ],
        None,  # tool_choice "none": the tools are not offered, the history stays readable
    )
    assert [m["role"] for m in out] == ["user", "assistant", "user", "user"]
    assert "tool_calls" not in out[1]
    paris, rome = (
        call_text("get_weather", {"city": "Paris"}),
        call_text("get_weather", {"city": "Rome"}),
    )
    assert out[1]["content"] == paris + "\n" + rome
    assert (
        paris
        == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    assert out[2]["content"] == (
        "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrain\n</tool_response>"
    )

"""Canonical messages -> OpenAI-style messages, as upstreams and chat templates receive them."""

from __future__ import annotations

from modelport.core.types import (
    ImagePart,
    Message,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from modelport.protocols.openai.messages import openai_messages


def test_tool_results_inside_a_user_message_become_tool_messages_first() -> None:
    message = Message("user", (TextPart("and now?"), ToolResultPart("c9", "42")))
    for for_template in (False, True):
        assert openai_messages((message,), for_template=for_template) == [
            {"role": "tool", "tool_call_id": "c9", "content": "42"},
            {"role": "user", "content": "and now?"},
        ]


def test_a_turn_of_only_tool_results_adds_no_empty_message() -> None:
    message = Message("user", (ToolResultPart("a", "1"), ToolResultPart("b", "2")))
    assert [m["role"] for m in openai_messages((message,))] == ["tool", "tool"]


def test_assistant_calls_reasoning_and_content() -> None:
    message = Message(
        "assistant",
        (ReasoningPart("hmm"), ToolCallPart(id="c", name="f", arguments='{"x": 1}')),
    )
    (wire,) = openai_messages((message,))
    assert wire["content"] is None
    assert wire["reasoning_content"] == "hmm"
    assert wire["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'
    (templated,) = openai_messages((message,), for_template=True)
    assert templated["content"] == ""
    assert templated["tool_calls"][0]["function"]["arguments"] == {"x": 1}
    (ollama,) = openai_messages((message,), reasoning_field="reasoning")
    assert ollama["reasoning"] == "hmm"
    (raw,) = openai_messages((message,), reasoning_field=None)
    assert "reasoning_content" not in raw


def test_arguments_that_are_not_a_json_object_stay_text() -> None:
    call = Message("assistant", (ToolCallPart(id="c", name="f", arguments="not json"),))
    (rendered,) = openai_messages((call,), for_template=True)
    assert rendered["tool_calls"][0]["function"]["arguments"] == "not json"


def test_blank_arguments_are_an_empty_object_for_upstreams_and_templates() -> None:
    # Clients send "" back for a call to a function without parameters.
    call = Message("assistant", (ToolCallPart(id="c", name="now", arguments=" "),))
    (wire,) = openai_messages((call,))
    (templated,) = openai_messages((call,), for_template=True)
    assert wire["tool_calls"][0]["function"]["arguments"] == "{}"
    assert templated["tool_calls"][0]["function"]["arguments"] == {}


def test_text_parts_are_joined_the_same_way_for_every_backend() -> None:
    message = Message("user", (TextPart("a"), TextPart("b")))
    assert openai_messages((message,))[0]["content"] == "a\nb"
    assert openai_messages((message,), for_template=True)[0]["content"] == "a\nb"


def test_images_become_content_parts() -> None:
    message = Message(
        "user", (TextPart("what is this?"), ImagePart("data:image/png;base64,AA", "low"))
    )
    (wire,) = openai_messages((message,))
    assert wire["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
    ]

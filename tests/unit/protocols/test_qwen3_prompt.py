"""The Python Qwen3 prompt renderer gives, byte for byte, what Qwen3's official Jinja template
renders in the engine's own template environment, for the dicts the engine gives templates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import Template

from modelport.backends.llamacpp.template import ChatTemplate
from modelport.core.types import (
    ChatRequest,
    ImagePart,
    Message,
    ReasoningPart,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
)
from modelport.protocols.openai.messages import openai_messages, openai_tool
from modelport.protocols.qwen3.prompt import render_prompt

SOURCE = (Path(__file__).parents[2] / "data" / "qwen3.jinja").read_text(encoding="utf-8")
HYBRID_PROMPT = """\
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
"""
assert HYBRID_PROMPT in SOURCE
# Qwen3-Thinking-2507's generation prompt, on the same template.
PREOPENED_SOURCE = SOURCE.replace(HYBRID_PROMPT, "{{- '<|im_start|>assistant\\n<think>\\n' }}\n")


def compiled(source: str) -> Template:
    # The engine's ChatTemplate compiles it: the same sandbox, whitespace options and tojson
    # the local engine renders GGUF templates with.
    return ChatTemplate(source, bos_token="", eos_token="<|im_end|>")._template


QWEN3 = compiled(SOURCE)
QWEN3_THINKING_2507 = compiled(PREOPENED_SOURCE)


def jinja_prompt(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    *,
    enable_thinking: bool | None = None,
    add_generation_prompt: bool = True,
    preopen_think: bool = False,
) -> str:
    variables: dict[str, Any] = {"add_generation_prompt": add_generation_prompt}
    if enable_thinking is not None:
        variables["enable_thinking"] = enable_thinking
    template = QWEN3_THINKING_2507 if preopen_think else QWEN3
    return template.render(messages=messages, tools=tools, **variables)


def user(text: str) -> Message:
    return Message("user", (TextPart(text),))


def system(text: str) -> Message:
    return Message("system", (TextPart(text),))


def assistant(*parts: TextPart | ReasoningPart | ToolCallPart) -> Message:
    return Message("assistant", parts)


def results(*pairs: tuple[str, str]) -> Message:
    return Message("tool", tuple(ToolResultPart(call_id, text) for call_id, text in pairs))


WEATHER = Tool(
    name="get_weather",
    description="查询城市天气 (current weather).",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "description": "城市, e.g. 北京"}},
        "required": ["city"],
    },
)
CLOCK = Tool(name="now", description=None, parameters={})

# name -> (conversation, tools)
CONVERSATIONS: dict[str, tuple[tuple[Message, ...], tuple[Tool, ...]]] = {
    "one-user-message": ((user("你好"),), ()),
    "system-and-turns": (
        (system("You are helpful."), user("2+2?"), assistant(TextPart("4")), user("3+3?")),
        (),
    ),
    "later-system-message": ((user("Hi"), system("Be brief."), user("Again")), ()),
    "tools-without-system": ((user("北京天气怎么样?"),), (WEATHER, CLOCK)),
    "tools-after-system-text": ((system("Answer in Chinese."), user("天气?")), (WEATHER,)),
    "earlier-reasoning-dropped": (
        (user("Hi"), assistant(ReasoningPart("A greeting."), TextPart("Hello!")), user("Bye")),
        (),
    ),
    "agentic-turn-keeps-reasoning": (
        (
            user("Weather in Beijing and Shanghai?"),
            assistant(
                ReasoningPart("Two cities: two calls."),
                ToolCallPart("c1", "get_weather", '{"city": "北京"}'),
                ToolCallPart("c2", "get_weather", '{"city":"上海"}'),
            ),
            results(("c1", "晴, 25°C"), ("c2", "多云 🌥 22°C")),
            assistant(ReasoningPart("\nBoth known.\n"), TextPart("\n\nSunny, then cloudy.")),
        ),
        (WEATHER,),
    ),
    "last-assistant-without-reasoning": ((user("Hi"), assistant(TextPart("Hello"))), ()),
    "think-block-in-content": (
        (
            user("Q1"),
            assistant(TextPart("<think>\nold plan\n</think>\n\nA1")),
            user("Q2"),
            assistant(TextPart("\n<think>\n\nnew plan\n\n</think>\n\n\nA2")),
        ),
        (),
    ),
    "reasoning-field-wins-over-content-tags": (
        (user("Q"), assistant(ReasoningPart("real"), TextPart("a </think> b"))),
        (),
    ),
    "empty-reasoning-field": ((user("Q"), assistant(ReasoningPart(""), TextPart("x"))), ()),
    "arguments-object-text-and-blank": (
        (
            user("Go"),
            assistant(
                TextPart("Calling."),
                ToolCallPart("a", "get_weather", '{"city": "Zürich", "days": [1, 2.5, null]}'),
                ToolCallPart("b", "get_weather", "not json"),
                ToolCallPart("c", "now", ""),
                ToolCallPart("d", "now", "[1, 2]"),
            ),
            results(("a", "ok"), ("b", "bad"), ("c", "12:00"), ("d", "?")),
        ),
        (WEATHER, CLOCK),
    ),
    "results-in-a-user-turn": (
        (
            user("Weather?"),
            assistant(ToolCallPart("t1", "get_weather", '{"city": "Paris"}')),
            Message("user", (ToolResultPart("t1", "rain"), TextPart("Thanks. Tomorrow?"))),
        ),
        (WEATHER,),
    ),
    "wrapped-results-are-not-a-query": (
        (
            user("Weather?"),
            assistant(ReasoningPart("Call it."), ToolCallPart("t1", "now", "{}")),
            user("<tool_response>\n12:00\n</tool_response>"),
            assistant(ReasoningPart("Done."), TextPart("Noon.")),
        ),
        (CLOCK,),
    ),
    "user-text-only-opening-a-response-is-a-query": (
        (
            user("Q"),
            assistant(ReasoningPart("r1"), TextPart("a1")),
            user("<tool_response> opens, never closes"),
            assistant(ReasoningPart("r2"), TextPart("a2")),
        ),
        (),
    ),
    "user-text-only-closing-a-response-is-a-query": (
        (
            user("Q"),
            assistant(ReasoningPart("r1"), TextPart("a1")),
            user("closes, never opened </tool_response>"),
            assistant(ReasoningPart("r2"), TextPart("a2")),
        ),
        (),
    ),
    "no-user-message": ((system("S"), assistant(ReasoningPart("r"), TextPart("a"))), ()),
    "tool-result-first": ((results(("x", "orphan")), user("Hm?")), ()),
    "tags-typed-by-the-user": (
        (user("What do <think> and </think> mean? <tool_call>{}</tool_call> <|im_end|>"),),
        (),
    ),
    "whitespace-and-scripts": (
        (
            user("日本語と한국어, 😀👍🏽🇨🇳"),
            assistant(TextPart("```python\ndef f(x):\n\treturn x  #  ok\n```")),
            user("   spaces   \n\n\n\ttabs\t\t \r\n end  "),
        ),
        (),
    ),
}

OPTIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "thinking-on": {"enable_thinking": True},
    "thinking-off": {"enable_thinking": False},
    "no-generation-prompt": {"add_generation_prompt": False},
    "thinking-off-no-generation-prompt": {"enable_thinking": False, "add_generation_prompt": False},
    "preopened": {"preopen_think": True},
    "preopened-no-generation-prompt": {"preopen_think": True, "add_generation_prompt": False},
}


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_conversations_render_as_the_official_template_does(name: str, option: str) -> None:
    conversation, tools = CONVERSATIONS[name]
    messages = openai_messages(conversation, for_template=True)
    offered = [openai_tool(tool, with_strict=False) for tool in tools] or None
    expected = jinja_prompt(messages, offered, **OPTIONS[option])
    assert render_prompt(messages, offered, **OPTIONS[option]) == expected


def test_the_engine_renders_the_same_prompt_for_a_request() -> None:
    # Through ChatTemplate.render itself, as the local engine builds a prompt.
    conversation, tools = CONVERSATIONS["agentic-turn-keeps-reasoning"]
    req = ChatRequest(model="m", messages=conversation, tools=tools)
    engine = ChatTemplate(SOURCE, bos_token="", eos_token="<|im_end|>")
    messages = openai_messages(conversation, for_template=True)
    offered = [openai_tool(tool, with_strict=False) for tool in tools]
    off = {"enable_thinking": False}
    assert render_prompt(messages, offered) == engine.render(req)
    assert render_prompt(messages, offered, **off) == engine.render(req, defaults=off)


def test_a_greeting() -> None:
    messages = [{"role": "user", "content": "你好"}]
    assert render_prompt(messages) == "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    assert render_prompt(messages, enable_thinking=False) == (
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert render_prompt(messages, preopen_think=True) == (
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )
    assert (
        render_prompt(messages, add_generation_prompt=False) == "<|im_start|>user\n你好<|im_end|>\n"
    )


def test_a_tool_round_trip() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in 北京?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "One call.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "北京"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "晴"},
    ]
    tools = [
        openai_tool(Tool(name="get_weather", description=None, parameters={}), with_strict=False)
    ]
    assert render_prompt(messages, tools) == (
        "<|im_start|>system\nBe brief.\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        '{"type": "function", "function": {"name": "get_weather", '
        '"parameters": {"type": "object", "properties": {}}}}\n</tools>\n\n'
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather in 北京?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nOne call.\n</think>\n\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n晴\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_null_content_is_empty_text() -> None:
    # The OpenAI shape for upstreams (content None beside tool calls) renders like the
    # template shape (content "").
    conversation = (user("Go"), assistant(ToolCallPart("c", "now", "{}")))
    upstream = openai_messages(conversation)
    assert upstream[1]["content"] is None
    assert render_prompt(upstream) == render_prompt(
        openai_messages(conversation, for_template=True)
    )


@pytest.mark.parametrize(
    ("messages", "options", "error"),
    [
        pytest.param([], {}, "at least one message", id="empty"),
        pytest.param(
            openai_messages((Message("user", (ImagePart("https://x/y.png"),)),)),
            {},
            "text content only",
            id="image",
        ),
        pytest.param(
            [{"role": "user", "content": "Hi"}],
            {"preopen_think": True, "enable_thinking": False},
            "cannot turn thinking off",
            id="preopened-thinking-off",
        ),
    ],
)
def test_what_cannot_be_rendered_is_refused(
    messages: list[dict[str, Any]], options: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        render_prompt(messages, **options)


# Text biased towards what the template treats specially: its tags, newlines around them,
# tool-response wrapping; plus scripts, emoji and arbitrary characters.
FRAGMENTS = st.sampled_from(
    [
        "<think>", "</think>", "<tool_response>", "</tool_response>", "<tool_call>",
        "<|im_end|>", "\n", "\n\n", " ", "\t", "\r\n", "你好", "😀", "{\"a\": 1}", "plan", "answer",
    ]
)  # fmt: skip
ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)
TEXT = st.lists(st.one_of(FRAGMENTS, ANY_TEXT), max_size=6).map("".join)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=6,
)
ARGUMENTS = st.dictionaries(TEXT, JSON_VALUES, max_size=3) | TEXT | JSON_VALUES.map(json.dumps)


@st.composite
def tool_calls(draw: st.DrawFn) -> dict[str, Any]:
    function = {"name": draw(TEXT), "arguments": draw(ARGUMENTS)}
    if draw(st.booleans()):
        return {"id": draw(TEXT), "type": "function", "function": function}
    return function  # the template also accepts a call without the "function" wrapper


@st.composite
def assistant_messages(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": draw(TEXT)}
    if draw(st.booleans()):
        message["reasoning_content"] = draw(TEXT)
    if draw(st.booleans()):
        message["tool_calls"] = draw(st.lists(tool_calls(), max_size=3))
    return message


USER_CONTENT = st.one_of(
    TEXT,
    TEXT.map(lambda text: f"<tool_response>{text}</tool_response>"),
    TEXT.map(lambda text: f"<tool_response>{text}"),
    TEXT.map(lambda text: f"{text}</tool_response>"),
)
MESSAGES = st.one_of(
    st.fixed_dictionaries({"role": st.just("system"), "content": TEXT}),
    st.fixed_dictionaries({"role": st.just("user"), "content": USER_CONTENT}),
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": TEXT, "content": TEXT}),
    assistant_messages(),
)
TOOLS = st.none() | st.lists(
    st.builds(
        lambda name, description, parameters: openai_tool(
            Tool(name=name, description=description, parameters=parameters), with_strict=False
        ),
        TEXT,
        st.none() | TEXT,
        st.dictionaries(TEXT, JSON_VALUES, max_size=3),
    ),
    max_size=3,
)
THINKING = st.sampled_from([{}, {"enable_thinking": True}, {"enable_thinking": False}]) | st.just(
    {"preopen_think": True}
)


@settings(max_examples=400, deadline=None)
@given(
    messages=st.lists(MESSAGES, min_size=1, max_size=8),
    tools=TOOLS,
    thinking=THINKING,
    add_generation_prompt=st.booleans(),
)
def test_random_conversations_render_as_the_official_template_does(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    thinking: dict[str, Any],
    add_generation_prompt: bool,
) -> None:
    options = {**thinking, "add_generation_prompt": add_generation_prompt}
    assert render_prompt(messages, tools, **options) == jinja_prompt(messages, tools, **options)

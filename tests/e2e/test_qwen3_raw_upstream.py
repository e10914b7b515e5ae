"""Qwen3 models behind upstreams that return the model's raw text (no reasoning or tool-call
parser on their side, `parse_output = true`): modelport's parsers turn it into reasoning,
answers and tool calls. A scripted upstream replays real Qwen3 output shapes over real HTTP,
split at awkward places; the official OpenAI SDK reads the result."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from tests.e2e.server import RunningServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script

from modelport.tokenizers.qwen3 import qwen3_tokenizer

pytestmark = pytest.mark.e2e

HYBRID = "qwen/qwen3-8b"
THINKING = "qwen/qwen3-235b-a22b-thinking-2507"
CODER = "qwen/qwen3-coder"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
        },
    },
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(models=("Qwen/Qwen3",))
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream
) -> Iterator[openai.OpenAI]:
    data_dir: Path = tmp_path_factory.mktemp("raw-gateway")
    config = data_dir / "modelport.toml"
    config.write_text(
        "\n".join(
            f"""
[[models]]
id = "{model}"
  [[models.backends]]
  kind = "openai_compat"
  url = "{upstream.base_url}"
  dialect = "vllm"
  parse_output = true
"""
            for model in (HYBRID, THINKING, CODER)
        )
    )
    with RunningServer(data_dir, config=config) as server:
        yield openai.OpenAI(
            base_url=server.base_url + "/v1", api_key=server.admin_key, max_retries=0
        )


def ask(marker: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{marker}: what now?"}]


def test_thinking_then_answer_split_anywhere(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on(
        "THINK",
        Script(
            text=[
                "<th",
                "ink>\nThe user asks",
                " about Paris.\n</thi",
                "nk>\n\nParis is ",
                "lovely.",
            ]
        ),
    )
    for stream in (False, True):
        if stream:
            chunks = list(
                client.chat.completions.create(model=HYBRID, messages=ask("THINK"), stream=True)
            )
            content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            reasoning = "".join(
                (c.choices[0].delta.model_extra or {}).get("reasoning") or ""
                for c in chunks
                if c.choices
            )
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        else:
            response = client.chat.completions.create(model=HYBRID, messages=ask("THINK"))
            message = response.choices[0].message
            content = message.content or ""
            reasoning = (message.model_extra or {})["reasoning_content"]
            finish = response.choices[0].finish_reason
        assert reasoning == "The user asks about Paris."
        assert content == "Paris is lovely."
        assert finish == "stop"


def test_thinking_cut_off_by_the_limit_is_reasoning_not_content(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on("CUT", Script(text=["<think>\nStill work", "ing on it"], finish_reason="length"))
    response = client.chat.completions.create(model=HYBRID, messages=ask("CUT"), max_tokens=9)
    message = response.choices[0].message
    assert not message.content  # "" rather than null, for clients that expect a string
    assert (message.model_extra or {})["reasoning"] == "Still working on it"
    assert response.choices[0].finish_reason == "length"


def test_thinking_2507_output_without_an_opening_tag(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    # Its template opens <think> in the prompt: the output holds only the closing tag.
    upstream.on("PRE", Script(text=["Reasoning here.\n</th", "ink>\n\nThe answer."]))
    message = client.chat.completions.create(model=THINKING, messages=ask("PRE")).choices[0].message
    assert (message.model_extra or {})["reasoning"] == "Reasoning here."
    assert message.content == "The answer."


def test_two_qwen3_json_tool_calls_stream_into_the_sdk(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on(
        "TOOLS",
        Script(
            text=[
                "<think>\nTwo cities.\n</think>\n\n<tool_",
                'call>\n{"name": "get_weather", "argu',
                'ments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", ',
                '"arguments": {"city": "北京"}}\n</tool_call>',
            ]
        ),
    )
    with client.chat.completions.stream(
        model=HYBRID,
        messages=ask("TOOLS"),
        tools=[WEATHER],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [call.function.name for call in calls] == ["get_weather", "get_weather"]  # type: ignore[union-attr]
    assert [json.loads(call.function.arguments) for call in calls] == [  # type: ignore[union-attr]
        {"city": "Paris"},
        {"city": "北京"},
    ]
    assert len({call.id for call in calls}) == 2
    assert not choice.message.content


def test_coder_xml_tool_call_with_typed_parameters(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on(
        "XML",
        Script(
            text=[
                "I will search.\n<tool_call>\n<function=sea",
                "rch>\n<parameter=query>\nwaterproof shoes\n</param",
                "eter>\n<parameter=limit>\n5\n</parameter>\n</function>\n</tool_call>",
            ]
        ),
    )
    response = client.chat.completions.create(
        model=CODER,
        messages=ask("XML"),
        tools=[SEARCH],  # type: ignore[list-item]
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I will search."
    (call,) = choice.message.tool_calls or []
    assert json.loads(call.function.arguments) == {"query": "waterproof shoes", "limit": 5}  # type: ignore[union-attr]


def test_a_malformed_tool_call_is_an_error_not_text(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on("BROKEN", Script(text=['<tool_call>\n{"name": "get_weather", "arguments": {ci']))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model=HYBRID,
            messages=ask("BROKEN"),
            tools=[WEATHER],  # type: ignore[list-item]
            reasoning_effort="none",
        )
    assert info.value.status_code == 502
    body: Any = info.value.body
    assert body["code"] == "malformed_tool_call"


def test_parallel_tool_calls_false_passes_on_the_first_call_only(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    two = (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    )
    upstream.on("PAIR", Script(text=[two]))
    response = client.chat.completions.create(
        model=HYBRID,
        messages=ask("PAIR"),
        tools=[WEATHER],  # type: ignore[list-item]
        parallel_tool_calls=False,
    )
    calls = response.choices[0].message.tool_calls or []
    assert [json.loads(call.function.arguments) for call in calls] == [{"city": "Oslo"}]  # type: ignore[union-attr]
    assert upstream.requests[-1].body["parallel_tool_calls"] is False  # passed on as well


def test_tool_choice_required_answered_without_a_call_is_an_error(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on("NOCALL", Script(text=["It is sunny, I think."]))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model=HYBRID,
            messages=ask("NOCALL"),
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice="required",
            reasoning_effort="none",
        )
    assert info.value.status_code == 502
    assert "tool_choice" in info.value.message


def test_arguments_that_break_the_tool_schema_are_an_error(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"town": "Oslo"}}\n</tool_call>'
    upstream.on("SCHEMA", Script(text=[call]))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model=HYBRID,
            messages=ask("SCHEMA"),
            tools=[WEATHER],  # type: ignore[list-item]
            reasoning_effort="none",
        )
    assert info.value.status_code == 502
    assert "'city' is a required property" in info.value.message


def qwen3_count(text: str) -> int:
    tokenizer = qwen3_tokenizer()
    assert tokenizer is not None
    return tokenizer.count(text)


def test_reasoning_tokens_are_counted_when_the_upstream_reports_none(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    # An engine returning raw text knows nothing of reasoning: its usage says 0. The think
    # block as the model wrote it, tags included, is counted with Qwen3's tokenizer.
    block = "<think>\nThe user greets me; 我应该回答。\n</think>"
    upstream.on("COUNT", Script(text=[block[:20], block[20:] + "\n\nHello!"], usage=(9, 40)))
    for stream in (False, True):
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model=HYBRID,
                    messages=ask("COUNT"),
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            usage = chunks[-1].usage
        else:
            usage = client.chat.completions.create(model=HYBRID, messages=ask("COUNT")).usage
        assert usage is not None
        assert usage.completion_tokens == 40
        assert usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == qwen3_count(block)
        assert qwen3_count(block) > 5

"""Qwen's two-pass thinking budget on upstreams without a budget parameter, end to end.

Pass 1 asks the upstream's /chat/completions to think with max_tokens = the budget and
`</think>` as the stop string; pass 2 sends /completions the conversation in Qwen3's chat
format with the reasoning in a closed think block and max_tokens = what is left. A scripted
upstream plays both passes over real HTTP; the official OpenAI SDK reads one answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from tests.e2e.server import RunningServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script

pytestmark = pytest.mark.e2e

HYBRID = "qwen/qwen3-8b"
THINKING = "qwen/qwen3-235b-a22b-thinking-2507"
TIME_IS_UP = "\n\nI have run out of time to think, so I will answer now with what I have."
WEATHER: Any = {
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


def config(url: str) -> str:
    """qwen3-8b and Thinking-2507 on a hosted (generic) upstream, where two passes are the
    default; no local model."""
    entries = ['[[models]]\nid = "local/smollm2-135m-instruct"\nbackends = []\n']
    for model in (HYBRID, THINKING):
        entries.append(
            f'[[models]]\nid = "{model}"\n  [[models.backends]]\n  kind = "openai_compat"\n'
            f'  url = "{url}"\n  dialect = "generic"\n'
        )
    return "\n".join(entries)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(models=(HYBRID, THINKING))
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream
) -> Iterator[openai.OpenAI]:
    data_dir = tmp_path_factory.mktemp("two-pass")
    path = data_dir / "modelport.toml"
    path.write_text(config(upstream.base_url))
    with (
        RunningServer(data_dir, config=path) as server,
        openai.OpenAI(
            base_url=server.base_url + "/v1", api_key=server.admin_key, max_retries=0
        ) as sdk,
    ):
        yield sdk


@pytest.fixture
def fake(upstream: FakeOpenAIUpstream) -> Iterator[FakeOpenAIUpstream]:
    upstream.requests.clear()
    yield upstream
    with upstream._lock:
        left = list(upstream._queue)
        upstream._queue.clear()
    assert not left, f"scripted answers were not asked for: {left}"


def ask(client: openai.OpenAI, text: str, **fields: Any) -> Any:
    fields.setdefault("model", HYBRID)
    return client.chat.completions.create(messages=[{"role": "user", "content": text}], **fields)


def test_the_budget_cuts_the_thinking_and_pass_two_answers(
    client: openai.OpenAI, fake: FakeOpenAIUpstream
) -> None:
    fake.enqueue(
        Script(reasoning=["Let me think", " about 2+2."], finish_reason="length", usage=(20, 50)),
        Script(text=["The answer", " is 4."], usage=(75, 6)),
    )
    answer = ask(
        client, "What is 2+2?", max_tokens=1000, extra_body={"reasoning": {"max_tokens": 50}}
    )
    message = answer.choices[0].message
    assert message.model_extra["reasoning"] == "Let me think about 2+2."
    assert message.content == "The answer is 4."
    assert answer.choices[0].finish_reason == "stop"
    # One answer's usage: the client's prompt once, every generated token, pass 1's as
    # reasoning.
    assert answer.usage.prompt_tokens == 20
    assert answer.usage.completion_tokens == 56
    assert answer.usage.completion_tokens_details.reasoning_tokens == 50

    thinking, continuing = fake.requests
    assert thinking.path == "/v1/chat/completions"
    assert thinking.body["max_tokens"] == 50
    assert thinking.body["stop"] == ["</think>"]
    assert continuing.path == "/v1/completions"
    assert continuing.body["max_tokens"] == 1000 - 50
    assert continuing.body["prompt"] == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        "<think>\nLet me think about 2+2." + TIME_IS_UP + "\n</think>\n\n"
    )
    # The client's sampling reaches both passes (Qwen's thinking defaults here).
    assert thinking.body["temperature"] == continuing.body["temperature"] == 0.6


def test_thinking_that_ends_within_the_budget_is_continued_as_written(
    client: openai.OpenAI, fake: FakeOpenAIUpstream
) -> None:
    fake.enqueue(
        Script(reasoning=["\nShort thought.\n"], finish_reason="stop", usage=(20, 5)),
        Script(text=["Done."], usage=(30, 2)),
    )
    answer = ask(client, "Quick one", extra_body={"reasoning": {"effort": "low"}})
    assert answer.choices[0].message.content == "Done."
    thinking, continuing = fake.requests
    # effort low: 0.2 x the card's output limit, at least 1024 tokens.
    assert thinking.body["max_tokens"] >= 1024
    assert continuing.body["prompt"].endswith(
        "<|im_start|>assistant\n<think>\nShort thought.\n</think>\n\n"
    )
    assert answer.usage.completion_tokens == 7


def test_streamed_reasoning_then_the_answer(
    client: openai.OpenAI, fake: FakeOpenAIUpstream
) -> None:
    fake.enqueue(
        Script(reasoning=["Thinking", " hard"], finish_reason="length", usage=(10, 40)),
        Script(text=["Forty", "-two."], usage=(60, 3)),
    )
    stream = ask(
        client,
        "Meaning of life?",
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"reasoning": {"max_tokens": 40}},
    )
    reasoning, content, finishes, usage = [], [], [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            if extra.get("reasoning"):
                reasoning.append(extra["reasoning"])
                assert not content, "reasoning after the answer began"
            if choice.delta.content:
                content.append(choice.delta.content)
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert "".join(reasoning) == "Thinking hard"
    assert "".join(content) == "Forty-two."
    assert finishes == ["stop"]
    assert usage is not None and usage.completion_tokens == 43
    assert usage.completion_tokens_details.reasoning_tokens == 40
    assert [r.body["stream"] for r in fake.requests] == [True, True]


def test_a_tool_call_in_the_continuation(client: openai.OpenAI, fake: FakeOpenAIUpstream) -> None:
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    fake.enqueue(
        Script(reasoning=["I should look it up."], finish_reason="stop", usage=(90, 6)),
        Script(text=[call[:30], call[30:]], usage=(100, 20)),
    )
    answer = ask(
        client,
        "Weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        extra_body={"reasoning": {"max_tokens": 100}},
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    (tool_call,) = choice.message.tool_calls
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == {"city": "Paris"}
    thinking, continuing = fake.requests
    # Pass 1 must be free to think: a forced call would begin at once.
    assert thinking.body["tool_choice"] == "auto"
    assert thinking.body["tools"][0]["function"]["name"] == "get_weather"
    # Pass 2's prompt carries the tools block as Qwen3's template writes it.
    assert "<tools>\n" + json.dumps(WEATHER) in continuing.body["prompt"]


def test_thinking_2507_continues_its_preopened_block(
    client: openai.OpenAI, fake: FakeOpenAIUpstream
) -> None:
    fake.enqueue(
        Script(reasoning=["Hmm."], finish_reason="length", usage=(12, 30)),
        Script(text=["Yes."], usage=(40, 2)),
    )
    answer = ask(client, "Is it?", model=THINKING, extra_body={"reasoning": {"max_tokens": 30}})
    assert answer.choices[0].message.content == "Yes."
    prompt = fake.requests[1].body["prompt"]
    assert prompt.endswith("<|im_start|>assistant\n<think>\nHmm." + TIME_IS_UP + "\n</think>\n\n")
    assert prompt.count("<think>") == 1


def test_an_upstream_that_answers_in_pass_one_is_relayed_as_is(
    client: openai.OpenAI, fake: FakeOpenAIUpstream
) -> None:
    # It ignored the stop string: the reasoning closed and the answer followed.
    fake.enqueue(Script(reasoning=["ok"], text=["Already here."], usage=(5, 9)))
    answer = ask(client, "Now", extra_body={"reasoning": {"max_tokens": 64}})
    assert answer.choices[0].message.content == "Already here."
    assert answer.usage.completion_tokens == 9
    assert len(fake.requests) == 1


def test_a_zero_budget_skips_the_thinking_pass(
    client: openai.OpenAI, fake: FakeOpenAIUpstream
) -> None:
    fake.enqueue(Script(text=["Straight away."], usage=(15, 3)))
    answer = ask(client, "No time", extra_body={"reasoning": {"max_tokens": 0}})
    assert answer.choices[0].message.content == "Straight away."
    assert answer.choices[0].message.model_extra.get("reasoning") is None
    (only,) = fake.requests
    assert only.path == "/v1/completions"
    assert only.body["prompt"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert answer.usage.completion_tokens == 3


def test_a_budget_that_fills_the_output_limit_ends_with_length(
    client: openai.OpenAI, fake: FakeOpenAIUpstream
) -> None:
    fake.enqueue(Script(reasoning=["long"], finish_reason="length", usage=(5, 100)))
    answer = ask(client, "Big", max_tokens=100, extra_body={"reasoning": {"max_tokens": 500}})
    choice = answer.choices[0]
    assert choice.finish_reason == "length"
    assert not choice.message.content
    assert choice.message.model_extra["reasoning"] == "long"
    # The budget is capped at the limit minus one; the upstream wrote the whole limit anyway.
    assert fake.requests[0].body["max_tokens"] == 99
    assert len(fake.requests) == 1


def test_without_a_budget_one_pass_as_before(
    client: openai.OpenAI, fake: FakeOpenAIUpstream
) -> None:
    fake.enqueue(Script(reasoning=["r"], text=["plain"], usage=(5, 3)))
    answer = ask(client, "Hello")
    assert answer.choices[0].message.content == "plain"
    (only,) = fake.requests
    assert only.path == "/v1/chat/completions"
    assert "stop" not in only.body


def test_excluded_reasoning_is_hidden_but_counted(
    client: openai.OpenAI, fake: FakeOpenAIUpstream
) -> None:
    for stream in (False, True):
        fake.enqueue(
            Script(reasoning=["secret thoughts"], finish_reason="length", usage=(8, 20)),
            Script(text=["Visible."], usage=(30, 2)),
        )
        reasoning = {"max_tokens": 20, "exclude": True}
        if stream:
            chunks = list(
                ask(
                    client,
                    "Hide it",
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_body={"reasoning": reasoning},
                )
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            said = [c.choices[0].delta.model_extra for c in chunks if c.choices]
            assert not any((extra or {}).get("reasoning") for extra in said)
            usage = chunks[-1].usage
        else:
            answer = ask(client, "Hide it", extra_body={"reasoning": reasoning})
            text = answer.choices[0].message.content
            assert not answer.choices[0].message.model_extra.get("reasoning")
            usage = answer.usage
        assert text == "Visible."
        # Billed all the same: the thinking happened.
        assert usage.completion_tokens == 22
        assert usage.completion_tokens_details.reasoning_tokens == 20

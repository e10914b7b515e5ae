"""Qwen3 behind every upstream dialect, end to end: what the official OpenAI SDK reads back, and
what each dialect sends upstream.

One real server per (dialect, output shape) in a subprocess, in front of a scripted upstream
that speaks real HTTP: "parsed" servers stand for engines started with reasoning and tool-call
parsers (the upstream separates reasoning and tool calls itself); "raw-text" servers
(`parse_output = true`) stand for engines that return Qwen3's raw text, which modelport parses.
Every answer is read both whole and as a stream.

The expectations below restate docs/backends.md ("Dialects") and docs/api.md on their own,
rather than importing the dialect table, so that a change to the table shows up here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

import openai
import pytest
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionMessageFunctionToolCall
from tests.e2e.server import RunningServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script, ToolCallScript

pytestmark = pytest.mark.e2e

HYBRID = "qwen/qwen3-8b"  # thinks unless turned off; JSON tool calls
THINKING = "qwen/qwen3-235b-a22b-thinking-2507"  # always thinks
CODER = "qwen/qwen3-coder"  # never thinks; XML tool calls
UPSTREAM_NAMES = {
    HYBRID: "Qwen/Qwen3-8B",
    THINKING: "Qwen/Qwen3-235B-A22B-Thinking-2507",
    CODER: "Qwen/Qwen3-Coder-30B-A3B-Instruct",
}


@dataclass(frozen=True)
class Dialect:
    """What one dialect's engine writes, and what modelport must send it (docs/backends.md)."""

    # The field the engine's reasoning parser writes in answers.
    answers_reasoning_in: str
    # The field earlier reasoning goes back in on assistant messages (None: dropped).
    history_reasoning_in: str | None
    # How a hybrid model is told not to think: `chat_template_kwargs.enable_thinking`, Qwen's
    # "/no_think" soft switch in the last user message, or not at all.
    thinking_off: Literal["template", "soft_switch"] | None
    # Non-OpenAI sampling keys sent, under the engine's own name.
    samplers: Mapping[str, str]
    # Where the thinking budget goes; None: the engine reads none (not tested here).
    budget_path: tuple[str, ...] | None = None
    # Ollama (and older llama.cpp servers) end a turn of tool calls with "stop".
    finish_after_tools: str = "tool_calls"


_SAMPLERS = {"top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repetition_penalty"}
# Engines that render Qwen's own chat template with the client's kwargs.
_TEMPLATE_ENGINE = Dialect(
    answers_reasoning_in="reasoning_content",
    history_reasoning_in="reasoning_content",
    thinking_off="template",
    samplers=_SAMPLERS,
)
DIALECTS = {
    "generic": _TEMPLATE_ENGINE,  # hosted Qwen (DashScope's OpenAI mode)
    "vllm": replace(  # vLLM >= 0.11 writes `reasoning`
        _TEMPLATE_ENGINE, answers_reasoning_in="reasoning", budget_path=("thinking_token_budget",)
    ),
    "sglang": replace(_TEMPLATE_ENGINE, budget_path=("custom_params", "thinking_budget")),
    "llamacpp_server": replace(
        _TEMPLATE_ENGINE,
        budget_path=("thinking_budget_tokens",),
        samplers=_SAMPLERS | {"repetition_penalty": "repeat_penalty"},
    ),
    "ollama": Dialect(
        answers_reasoning_in="reasoning",
        history_reasoning_in="reasoning",
        thinking_off="soft_switch",
        samplers={},
        finish_after_tools="stop",
    ),
    # Any other OpenAI-speaking server; it writes `reasoning` as OpenRouter does.
    "raw": Dialect(
        answers_reasoning_in="reasoning", history_reasoning_in=None, thinking_off=None, samplers={}
    ),
}
BUDGET_DIALECTS = sorted(name for name, rules in DIALECTS.items() if rules.budget_path)
SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "top_a",
    "repetition_penalty",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
)

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
SEARCH: Any = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the catalogue.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query"],
        },
    },
}

THINKING_OFF: Any = {"reasoning": {"effort": "none"}}


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Gateway:
    """A running modelport with all three Qwen3 models on one upstream of one dialect."""

    dialect: str
    rules: Dialect
    client: openai.OpenAI
    upstream: FakeOpenAIUpstream

    def sent(self, marker: str) -> dict[str, Any]:
        """The body of the last upstream request whose last user message carries `marker`."""
        for record in reversed(self.upstream.requests):
            users = [m for m in record.body.get("messages", ()) if m.get("role") == "user"]
            if users and marker in json.dumps(users[-1].get("content")):
                body: dict[str, Any] = record.body
                return body
        raise AssertionError(f"no upstream request carried {marker!r}")


def gateway_config(url: str, dialect: str, parse_output: bool) -> str:
    """The operator's TOML: the three Qwen3 models on one upstream, and no local model (the
    server only relays, and starts in about half the time without loading one)."""
    entries = ['[[models]]\nid = "local/smollm2-135m-instruct"\nbackends = []\n']
    for model, upstream_model in UPSTREAM_NAMES.items():
        entries.append(
            f"""[[models]]
id = "{model}"
  [[models.backends]]
  kind = "openai_compat"
  url = "{url}"
  dialect = "{dialect}"
  upstream_model = "{upstream_model}"
  parse_output = {"true" if parse_output else "false"}
"""
        )
    return "\n".join(entries)


@contextmanager
def running_gateway(
    tmp_path_factory: pytest.TempPathFactory, dialect: str, *, parse_output: bool
) -> Iterator[Gateway]:
    upstream = FakeOpenAIUpstream(models=tuple(UPSTREAM_NAMES.values()))
    upstream.start_in_thread()
    try:
        shape = "raw-text" if parse_output else "parsed"
        data_dir = tmp_path_factory.mktemp(f"{dialect}-{shape}")
        config = data_dir / "modelport.toml"
        config.write_text(gateway_config(upstream.base_url, dialect, parse_output))
        with RunningServer(data_dir, config=config) as server:
            client = openai.OpenAI(
                base_url=server.base_url + "/v1", api_key=server.admin_key, max_retries=0
            )
            with client:
                yield Gateway(dialect, DIALECTS[dialect], client, upstream)
    finally:
        upstream.stop_thread()


@pytest.fixture(scope="module", params=list(DIALECTS))
def parsed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """An upstream with reasoning and tool-call parsers of its own."""
    with running_gateway(tmp_path_factory, request.param, parse_output=False) as gateway:
        yield gateway


@pytest.fixture(scope="module", params=list(DIALECTS))
def raw_text(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """An upstream that returns the model's raw text (`parse_output = true`)."""
    with running_gateway(tmp_path_factory, request.param, parse_output=True) as gateway:
        yield gateway


@pytest.fixture(params=[False, True], ids=["whole", "stream"])
def stream(request: pytest.FixtureRequest) -> bool:
    flag: bool = request.param
    return flag


# --------------------------------------------------------------------------- the SDK's view


@dataclass(frozen=True)
class Call:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Answer:
    """What a client reads from one completion, whole or streamed."""

    content: str | None
    reasoning: str | None  # message.reasoning / delta.reasoning
    reasoning_content: str | None  # the same under the name DeepSeek-style clients read
    tool_calls: tuple[Call, ...]
    finish_reason: str | None
    usage: CompletionUsage | None
    argument_fragments: int  # streamed pieces of tool-call arguments (0 for a whole answer)


def ask(gateway: Gateway, stream: bool, marker: str, **request: Any) -> Answer:
    """One completion through the SDK; `marker` (in the user message) picks the script."""
    request.setdefault("messages", [{"role": "user", "content": f"{marker}: go on"}])
    if stream:
        return _streamed(gateway.client, request)
    response = gateway.client.chat.completions.create(**request)
    choice = response.choices[0]
    message = choice.message
    extra = message.model_extra or {}
    calls = []
    for call in message.tool_calls or ():
        assert isinstance(call, ChatCompletionMessageFunctionToolCall)
        calls.append(Call(call.id, call.function.name, call.function.arguments))
    return Answer(
        content=message.content,
        reasoning=extra.get("reasoning"),
        reasoning_content=extra.get("reasoning_content"),
        tool_calls=tuple(calls),
        finish_reason=choice.finish_reason,
        usage=response.usage,
        argument_fragments=0,
    )


def _streamed(client: openai.OpenAI, request: dict[str, Any]) -> Answer:
    """Accumulate a stream the way a client must: deltas joined, tool calls by index (id and
    name on a call's first delta, argument fragments after), usage from the last chunk."""
    chunks = list(
        client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
    )
    content, reasoning, reasoning_content = [], [], []
    calls: dict[int, dict[str, Any]] = {}
    finishes: list[str] = []
    fragments = 0
    for chunk in chunks:
        assert chunk.id == chunks[0].id
        for choice in chunk.choices:
            assert not finishes, "a delta after the finish_reason"
            delta = choice.delta
            extra = delta.model_extra or {}
            content.append(delta.content or "")
            reasoning.append(extra.get("reasoning") or "")
            reasoning_content.append(extra.get("reasoning_content") or "")
            for call in delta.tool_calls or ():
                function = call.function
                if call.index not in calls:
                    assert call.id, "a tool call's first delta carries its id"
                    assert function is not None and function.name, "... and its name"
                    calls[call.index] = {"id": call.id, "name": function.name, "arguments": ""}
                else:
                    assert call.id in (None, calls[call.index]["id"])
                    assert function is None or function.name in (None, calls[call.index]["name"])
                if function is not None and function.arguments:
                    calls[call.index]["arguments"] += function.arguments
                    fragments += 1
            if choice.finish_reason is not None:
                finishes.append(choice.finish_reason)
    assert len(finishes) == 1, f"one finish_reason per stream, got {finishes}"
    assert chunks[-1].choices == [], "the usage chunk comes last, without choices"
    return Answer(
        content="".join(content),
        reasoning="".join(reasoning) or None,
        reasoning_content="".join(reasoning_content) or None,
        tool_calls=tuple(Call(**calls[index]) for index in sorted(calls)),
        finish_reason=finishes[0],
        usage=chunks[-1].usage,
        argument_fragments=fragments,
    )


def assert_usage(
    answer: Answer, prompt: int, completion: int, reasoning: int | None = None
) -> None:
    usage = answer.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, completion)
    assert usage.total_tokens == prompt + completion
    if reasoning is not None:
        assert usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == reasoning


# --------------------------------------------------------------------------- parsed upstreams


@pytest.mark.parametrize("model", [HYBRID, THINKING])
def test_thinking_answer_reaches_the_sdk_as_reasoning_and_content(
    parsed: Gateway, stream: bool, model: str
) -> None:
    parsed.upstream.on(
        "REASONED",
        Script(
            reasoning=["The capital ", "of France ", "is Paris."],
            text=["It is ", "Paris."],
            usage=(21, 14, 9),
            reasoning_field=parsed.rules.answers_reasoning_in,
        ),
    )
    answer = ask(parsed, stream, "REASONED", model=model)
    assert answer.reasoning == answer.reasoning_content == "The capital of France is Paris."
    assert answer.content == "It is Paris."
    assert answer.tool_calls == ()
    assert answer.finish_reason == "stop"
    assert_usage(answer, 21, 14, reasoning=9)


def test_several_tool_calls_in_one_answer(parsed: Gateway, stream: bool) -> None:
    parsed.upstream.on(
        "TWOCALLS",
        Script(
            reasoning=["Weather first, ", "then museums."],
            tool_calls=[
                ToolCallScript("get_weather", ['{"city"', ': "Par', 'is"}'], id="call_w1"),
                ToolCallScript(
                    "search", ['{"query": "muse', 'ums in Paris", ', '"limit": 3}'], id="call_s2"
                ),
            ],
            finish_reason=parsed.rules.finish_after_tools,
            usage=(40, 30, 6),
            reasoning_field=parsed.rules.answers_reasoning_in,
        ),
    )
    answer = ask(parsed, stream, "TWOCALLS", model=HYBRID, tools=[WEATHER, SEARCH])
    assert answer.tool_calls == (
        Call("call_w1", "get_weather", '{"city": "Paris"}'),
        Call("call_s2", "search", '{"query": "museums in Paris", "limit": 3}'),
    )
    if stream:  # the arguments really arrived in pieces and were joined by the client
        assert answer.argument_fragments > len(answer.tool_calls)
    assert answer.finish_reason == "tool_calls"
    assert answer.reasoning == answer.reasoning_content == "Weather first, then museums."
    assert answer.content == ("" if stream else None)  # null: the answer is tool calls alone
    assert_usage(answer, 40, 30, reasoning=6)


def test_thinking_cut_off_by_the_limit_has_no_content(parsed: Gateway, stream: bool) -> None:
    parsed.upstream.on(
        "TRUNCATED",
        Script(
            reasoning=["Let me count: 1, 2,", " 3, 4"],
            finish_reason="length",
            usage=(12, 16, 16),
            reasoning_field=parsed.rules.answers_reasoning_in,
        ),
    )
    answer = ask(parsed, stream, "TRUNCATED", model=HYBRID, max_tokens=16)
    assert answer.reasoning == answer.reasoning_content == "Let me count: 1, 2, 3, 4"
    assert answer.content == ""  # a string, never null, when there are no tool calls
    assert answer.finish_reason == "length"
    assert_usage(answer, 12, 16, reasoning=16)


def test_coder_answer_with_parsed_tool_calls(parsed: Gateway, stream: bool) -> None:
    parsed.upstream.on(
        "CODERCALL",
        Script(
            text=["I will search ", "first."],
            tool_calls=[
                ToolCallScript(
                    "search", ['{"query": "waterproof', ' shoes", "limit": 5}'], id="call_c1"
                )
            ],
            finish_reason=parsed.rules.finish_after_tools,
            usage=(33, 18),
        ),
    )
    answer = ask(parsed, stream, "CODERCALL", model=CODER, tools=[SEARCH])
    assert answer.content == "I will search first."
    assert answer.tool_calls == (
        Call("call_c1", "search", '{"query": "waterproof shoes", "limit": 5}'),
    )
    assert answer.finish_reason == "tool_calls"
    assert answer.reasoning is None
    assert answer.reasoning_content is None
    assert_usage(answer, 33, 18, reasoning=0)


@pytest.mark.parametrize(
    ("model", "tool", "arguments", "complaint"),
    [
        (HYBRID, WEATHER, '{"town": "Oslo"}', "'city' is a required property"),
        (CODER, SEARCH, '{"query": "boots", "limit": "five"}', "'five' is not of type 'integer'"),
    ],
    ids=["hybrid-missing-field", "coder-wrong-type"],
)
def test_tool_call_against_the_tools_schema_is_an_error(
    parsed: Gateway, stream: bool, model: str, tool: Any, arguments: str, complaint: str
) -> None:
    name = tool["function"]["name"]
    marker = f"BADARGS-{model}"
    parsed.upstream.on(marker, Script(tool_calls=[ToolCallScript(name, [arguments], id="call_x")]))
    error: openai.APIError
    if stream:
        with pytest.raises(openai.APIError) as streamed:
            ask(parsed, stream, marker, model=model, tools=[tool])
        error = streamed.value
    else:
        with pytest.raises(openai.APIStatusError) as whole:
            ask(parsed, stream, marker, model=model, tools=[tool])
        assert whole.value.status_code == 502
        error = whole.value
    body: Any = error.body
    assert body["code"] == "malformed_tool_call"
    assert complaint in error.message


def test_history_with_reasoning_tool_calls_and_results_is_sent_in_the_dialects_shape(
    parsed: Gateway,
) -> None:
    history: Any = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "I should look it up.",
            "tool_calls": [
                {
                    "id": "call_w1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_w1", "content": "18°C, sunny"},
        # Clients send earlier reasoning under either name.
        {"role": "assistant", "content": "18°C and sunny.", "reasoning": "The tool answered."},
        {"role": "user", "content": "HISTORY: and tomorrow?"},
    ]
    parsed.client.chat.completions.create(model=HYBRID, messages=history, tools=[WEATHER])
    body = parsed.sent("HISTORY")

    field = parsed.rules.history_reasoning_in

    def assistant(content: str | None, reasoning: str, **more: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content, **more}
        if field is not None:
            message[field] = reasoning
        return message

    assert body["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Weather in Paris?"},
        assistant(
            None,
            "I should look it up.",
            tool_calls=[
                {
                    "id": "call_w1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        ),
        {"role": "tool", "tool_call_id": "call_w1", "content": "18°C, sunny"},
        assistant("18°C and sunny.", "The tool answered."),
        {"role": "user", "content": "HISTORY: and tomorrow?"},
    ]
    assert body["tools"] == [WEATHER]
    assert body["tool_choice"] == "auto"


def conversation(marker: str) -> Any:
    """Two user turns, so that a soft switch can be seen landing on the last one only."""
    return [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": f"{marker}: what is 2+2?"},
    ]


def test_thinking_off_uses_the_dialects_switch_on_the_hybrid_model(parsed: Gateway) -> None:
    parsed.client.chat.completions.create(
        model=HYBRID, messages=conversation("SWITCH-HYBRID"), extra_body=THINKING_OFF
    )
    body = parsed.sent("SWITCH-HYBRID")
    first, last = body["messages"][0], body["messages"][-1]
    assert first["content"] == "Hi"
    switch = parsed.rules.thinking_off
    if switch == "template":
        assert body["chat_template_kwargs"] == {"enable_thinking": False}
        assert last["content"] == "SWITCH-HYBRID: what is 2+2?"
    elif switch == "soft_switch":
        assert "chat_template_kwargs" not in body
        assert last["content"].startswith("SWITCH-HYBRID: what is 2+2?")
        assert last["content"].rstrip().endswith("/no_think")
    else:
        assert "chat_template_kwargs" not in body
        assert last["content"] == "SWITCH-HYBRID: what is 2+2?"


@pytest.mark.parametrize("model", [THINKING, CODER])
def test_thinking_off_sends_no_switch_to_a_model_without_one(parsed: Gateway, model: str) -> None:
    # Thinking-2507 cannot stop thinking (its template opens <think> whatever it is told) and
    # Coder never starts: a switch would only mislead the engine's reasoning parser.
    marker = f"SWITCH-{model}"
    parsed.client.chat.completions.create(
        model=model, messages=conversation(marker), extra_body=THINKING_OFF
    )
    body = parsed.sent(marker)
    assert "enable_thinking" not in body.get("chat_template_kwargs", {})
    assert body["messages"][-1]["content"] == f"{marker}: what is 2+2?"


@pytest.mark.parametrize("parsed", BUDGET_DIALECTS, indirect=True)
def test_thinking_budget_goes_where_the_engine_reads_it(parsed: Gateway) -> None:
    path = parsed.rules.budget_path
    assert path is not None
    budget: Any = {"reasoning": {"max_tokens": 2000}}
    for model in (HYBRID, THINKING, CODER):
        marker = f"BUDGET-{model}"
        parsed.client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": marker}], extra_body=budget
        )
        body = parsed.sent(marker)
        if model == CODER:  # a model that never thinks gets no budget
            assert path[0] not in body
            continue
        value: Any = body
        for key in path:
            value = value[key]
        assert value == 2000, model


def test_qwen_default_sampling_per_mode_reaches_the_upstream(parsed: Gateway) -> None:
    names = parsed.rules.samplers
    thinking = {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0}
    non_thinking = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0}
    coder = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
    cases: list[tuple[str, str, dict[str, Any], Any]] = [
        ("DEFAULTS-ON", HYBRID, thinking, None),
        ("DEFAULTS-OFF", HYBRID, non_thinking, THINKING_OFF),
        ("DEFAULTS-2507", THINKING, thinking, None),
        ("DEFAULTS-CODER", CODER, coder, None),
    ]
    for marker, model, defaults, extra_body in cases:
        parsed.client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": marker}], extra_body=extra_body
        )
        body = parsed.sent(marker)
        expected = {
            names.get(key, key): value
            for key, value in defaults.items()
            if key in ("temperature", "top_p") or key in names
        }
        sent = {key: body[key] for key in SAMPLING_KEYS if key in body}
        assert sent == expected, marker


# --------------------------------------------------------------------------- raw-text upstreams


def test_raw_text_thinking_split_anywhere(raw_text: Gateway, stream: bool) -> None:
    raw_text.upstream.on(
        "RAWTHINK",
        Script(
            text=[
                "<th",
                "ink>\nThe user asks",
                " about Paris.\n</thi",
                "nk>\n\nParis is ",
                "lovely.",
            ],
            usage=(15, 21),
        ),
    )
    answer = ask(raw_text, stream, "RAWTHINK", model=HYBRID)
    assert answer.reasoning == answer.reasoning_content == "The user asks about Paris."
    assert answer.content == "Paris is lovely."
    assert answer.finish_reason == "stop"
    assert_usage(answer, 15, 21)


def test_raw_text_thinking_2507_without_an_opening_tag(raw_text: Gateway, stream: bool) -> None:
    # Its chat template opens <think> in the prompt: the output holds only the closing tag.
    raw_text.upstream.on(
        "RAWPRE", Script(text=["Reasoning", " here.\n</th", "ink>\n\nThe ", "answer."])
    )
    answer = ask(raw_text, stream, "RAWPRE", model=THINKING)
    assert answer.reasoning == answer.reasoning_content == "Reasoning here."
    assert answer.content == "The answer."
    assert answer.finish_reason == "stop"


def test_raw_text_json_tool_calls_split_anywhere(raw_text: Gateway, stream: bool) -> None:
    raw_text.upstream.on(
        "RAWTOOLS",
        Script(
            text=[
                "<think>\nTwo cities, two calls.\n</th",
                "ink>\n\n<tool_",
                'call>\n{"name": "get_weather", "argu',
                'ments": {"city": "Pa',
                'ris"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", ',
                '"arguments": {"city": "北京"}}\n</tool_',
                "call>",
            ]
        ),
    )
    answer = ask(raw_text, stream, "RAWTOOLS", model=HYBRID, tools=[WEATHER])
    assert [call.name for call in answer.tool_calls] == ["get_weather", "get_weather"]
    assert [json.loads(call.arguments) for call in answer.tool_calls] == [
        {"city": "Paris"},
        {"city": "北京"},
    ]
    ids = [call.id for call in answer.tool_calls]
    assert len(set(ids)) == 2
    assert all(call_id.startswith("call_") for call_id in ids)
    assert answer.finish_reason == "tool_calls"
    assert answer.reasoning == answer.reasoning_content == "Two cities, two calls."
    assert answer.content == ("" if stream else None)


def test_raw_text_coder_xml_tool_call_with_typed_parameters(
    raw_text: Gateway, stream: bool
) -> None:
    raw_text.upstream.on(
        "RAWXML",
        Script(
            text=[
                "I will search.\n<tool_call>\n<function=sea",
                "rch>\n<parameter=query>\nwaterproof sh",
                "oes\n</param",
                "eter>\n<parameter=limit>\n5\n</parameter>\n</func",
                "tion>\n</tool_call>",
            ]
        ),
    )
    answer = ask(raw_text, stream, "RAWXML", model=CODER, tools=[SEARCH])
    assert answer.content == "I will search."
    (call,) = answer.tool_calls
    assert call.name == "search"
    assert json.loads(call.arguments) == {"query": "waterproof shoes", "limit": 5}
    assert answer.finish_reason == "tool_calls"
    assert answer.reasoning is None


def test_raw_text_thinking_cut_off_has_no_content(raw_text: Gateway, stream: bool) -> None:
    raw_text.upstream.on(
        "RAWCUT", Script(text=["<think>\nStill work", "ing on it"], finish_reason="length")
    )
    answer = ask(raw_text, stream, "RAWCUT", model=HYBRID, max_tokens=9)
    assert answer.reasoning == answer.reasoning_content == "Still working on it"
    assert answer.content == ""
    assert answer.finish_reason == "length"

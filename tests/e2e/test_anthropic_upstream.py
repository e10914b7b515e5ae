"""The Anthropic door in front of Qwen3 models on a scripted vLLM upstream, end to end: what the
official `anthropic` SDK reads back, and what modelport sends upstream for it.

The real server runs in a subprocess with the three Qwen3 models on one fake vLLM (a real HTTP
server that answers what a test scripted and records every request). A marker in the last user
message picks each test's script. Expectations restate docs/anthropic.md and the vLLM dialect
of docs/backends.md rather than importing modelport's tables.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletionMessageFunctionToolCall
from tests.e2e.server import RunningServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script, ToolCallScript

pytestmark = pytest.mark.e2e

HYBRID = "qwen/qwen3-8b"  # thinks only when asked (Anthropic's rule); JSON tool calls
THINKING = "qwen/qwen3-235b-a22b-thinking-2507"  # always thinks
CODER = "qwen/qwen3-coder"  # never thinks
UPSTREAM_NAMES = {
    HYBRID: "Qwen/Qwen3-8B",
    THINKING: "Qwen/Qwen3-235B-A22B-Thinking-2507",
    CODER: "Qwen/Qwen3-Coder-30B-A3B-Instruct",
}
CONTEXT = 131072  # Qwen3-8B's context length in the catalog
# vLLM validates `reasoning_effort` against these; anything else is its 400.
VLLM_EFFORTS = (None, "low", "medium", "high")
# vLLM >= 0.11 writes reasoning as `reasoning`.
REASONING = "reasoning"

WEATHER: Any = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
WEATHER_UPSTREAM: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": WEATHER["input_schema"],
    },
}
THINK_2000: Any = {"type": "enabled", "budget_tokens": 2000}


# --------------------------------------------------------------------------- servers


def gateway_config(url: str) -> str:
    """The three Qwen3 models on one vLLM upstream, and no local model (the server only
    relays, and starts faster without loading one)."""
    entries = ['[[models]]\nid = "local/smollm2-135m-instruct"\nbackends = []\n']
    for model, upstream_model in UPSTREAM_NAMES.items():
        entries.append(
            f"""[[models]]
id = "{model}"
  [[models.backends]]
  kind = "openai_compat"
  url = "{url}"
  dialect = "vllm"
  upstream_model = "{upstream_model}"
"""
        )
    return "\n".join(entries)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(models=tuple(UPSTREAM_NAMES.values()))
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


def running(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: FakeOpenAIUpstream,
    name: str,
    env: dict[str, str] | None = None,
) -> RunningServer:
    data_dir: Path = tmp_path_factory.mktemp(name)
    config = data_dir / "modelport.toml"
    config.write_text(gateway_config(upstream.base_url))
    return RunningServer(data_dir, config=config, env=env)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream
) -> Iterator[RunningServer]:
    with running(tmp_path_factory, upstream, "anthropic-gateway") as server:
        yield server


@pytest.fixture(scope="module")
def tuned_gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream
) -> Iterator[RunningServer]:
    """An operator's choices: Claude ids served by Qwen3-8B, and a small body limit."""
    env = {"MODELPORT_CLAUDE_MODEL": HYBRID, "MODELPORT_MAX_REQUEST_BYTES": "65536"}
    with running(tmp_path_factory, upstream, "anthropic-tuned", env) as server:
        yield server


def sdk(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=server.base_url + "/api/anthropic", api_key=server.admin_key, max_retries=0
    )


@pytest.fixture
def client(gateway: RunningServer) -> Iterator[anthropic.Anthropic]:
    with sdk(gateway) as anthropic_client:
        yield anthropic_client


@pytest.fixture
def openai_client(gateway: RunningServer) -> Iterator[openai.OpenAI]:
    """The same gateway through its OpenAI door."""
    with openai.OpenAI(
        base_url=gateway.base_url + "/v1", api_key=gateway.admin_key, max_retries=0
    ) as openai_sdk:
        yield openai_sdk


# --------------------------------------------------------------------------- helpers


def ask(marker: str) -> Any:
    return [{"role": "user", "content": f"{marker}: go on"}]


def sent(upstream: FakeOpenAIUpstream, marker: str) -> dict[str, Any]:
    """The body of the last upstream request whose last user message carries `marker`."""
    for record in reversed(upstream.requests):
        users = [m for m in record.body.get("messages", ()) if m.get("role") == "user"]
        if users and marker in json.dumps(users[-1].get("content"), ensure_ascii=False):
            body: dict[str, Any] = record.body
            return body
    raise AssertionError(f"no upstream request carried {marker!r}")


def blocks(message: Message) -> list[tuple[Any, ...]]:
    """A message's content as plain tuples, comparable across whole and streamed answers."""
    out: list[tuple[Any, ...]] = []
    for block in message.content:
        if block.type == "thinking":
            out.append(("thinking", block.thinking, block.signature))
        elif block.type == "text":
            out.append(("text", block.text))
        elif block.type == "tool_use":
            out.append(("tool_use", block.id, block.name, block.input))
        else:
            out.append((block.type,))
    return out


def with_decoded_arguments(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` with each tool call's JSON arguments decoded, for comparing meaning rather
    than spacing."""
    decoded = copy.deepcopy(messages)
    for message in decoded:
        for call in message.get("tool_calls") or ():
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return decoded


def thinking_script(**overrides: Any) -> Script:
    fields: dict[str, Any] = {
        "reasoning": ["The capital ", "of France ", "is Paris."],
        "text": ["It is ", "Paris."],
        "usage": (21, 14, 9),
        "reasoning_field": REASONING,
    }
    fields.update(overrides)
    return Script(**fields)


# --------------------------------------------------------------------------- thinking


@pytest.mark.parametrize("model", [HYBRID, THINKING, CODER])
def test_thinking_on_request_sends_the_switch_and_the_budget(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream, model: str
) -> None:
    marker = f"THINK-{model}"
    thinks = model != CODER
    upstream.on(marker, thinking_script() if thinks else thinking_script(reasoning=()))
    message = client.messages.create(
        model=model, max_tokens=4000, thinking=THINK_2000, messages=ask(marker)
    )
    body = sent(upstream, marker)
    assert body["model"] == UPSTREAM_NAMES[model]
    assert body["max_tokens"] == 4000
    switch = body.get("chat_template_kwargs", {}).get("enable_thinking")
    if model == HYBRID:
        assert switch is True
    else:  # Thinking-2507 cannot stop thinking, Coder never starts: no switch for either
        assert switch is None
    if thinks:
        assert body["thinking_token_budget"] == 2000
        assert (body["temperature"], body["top_p"]) == (0.6, 0.95)  # Qwen's thinking defaults
    else:
        assert "thinking_token_budget" not in body
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 14)
    content = blocks(message)
    assert content[-1] == ("text", "It is Paris.")
    if thinks:
        kind, thinking, signature = content[0]
        assert (kind, thinking) == ("thinking", "The capital of France is Paris.")
        assert signature
        assert len(content) == 2
    else:
        assert len(content) == 1


def test_thinking_streams_through_the_stream_helper(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on("STREAMTHINK", thinking_script())
    request: Any = {
        "model": HYBRID,
        "max_tokens": 4000,
        "thinking": THINK_2000,
        "messages": ask("STREAMTHINK"),
    }
    whole = client.messages.create(**request)
    counted = client.messages.count_tokens(
        model=HYBRID, thinking=THINK_2000, messages=ask("STREAMTHINK")
    )
    started: list[int] = []
    opened: list[tuple[int, str]] = []
    deltas: list[tuple[int, str]] = []
    with client.messages.stream(**request) as stream:
        for event in stream:
            if event.type == "message_start":
                started.append(event.message.usage.input_tokens)
            elif event.type == "content_block_start":
                opened.append((event.index, event.content_block.type))
            elif event.type == "content_block_delta":
                deltas.append((event.index, event.delta.type))
        final = stream.get_final_message()
    assert opened == [(0, "thinking"), (1, "text")]
    assert deltas == [
        (0, "thinking_delta"),
        (0, "thinking_delta"),
        (0, "thinking_delta"),
        (0, "signature_delta"),
        (1, "text_delta"),
        (1, "text_delta"),
    ]
    assert blocks(final) == blocks(whole)  # the same signature for the same thinking
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (21, 14)
    # Before the upstream reports usage, message_start carries the prompt's counted size.
    assert started == [counted.input_tokens]
    body = sent(upstream, "STREAMTHINK")
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["thinking_token_budget"] == 2000


@pytest.mark.parametrize(
    ("case", "settings"),
    [
        ("absent", {}),
        ("disabled", {"thinking": {"type": "disabled"}}),
        ("effort-alone", {"output_config": {"effort": "high"}}),
    ],
)
def test_without_thinking_the_hybrid_model_is_told_not_to_think(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream, case: str, settings: Any
) -> None:
    marker = f"NOTHINK-{case}"
    message = client.messages.create(model=HYBRID, max_tokens=100, messages=ask(marker), **settings)
    body = sent(upstream, marker)
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "thinking_token_budget" not in body
    assert (body["temperature"], body["top_p"]) == (0.7, 0.8)  # Qwen's non-thinking defaults
    assert body.get("reasoning_effort") in VLLM_EFFORTS
    assert [block.type for block in message.content] == ["text"]


@pytest.mark.parametrize(
    ("effort", "budget"),
    [("low", 2000), ("medium", 5000), ("high", 8000), ("max", 9500)],
)
def test_effort_sets_the_thinking_budget(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream, effort: Any, budget: int
) -> None:
    # Claude Code's shape: adaptive thinking and an effort. The budget is the effort's share
    # of max_tokens (docs/api.md), and whatever reaches vLLM must be something it accepts.
    marker = f"EFFORT-{effort}"
    client.messages.create(
        model=HYBRID,
        max_tokens=10_000,
        thinking={"type": "adaptive"},
        output_config={"effort": effort},
        messages=ask(marker),
    )
    body = sent(upstream, marker)
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert body["thinking_token_budget"] == budget
    assert body.get("reasoning_effort") in VLLM_EFFORTS, body["reasoning_effort"]


def test_omitted_thinking_display_hides_the_thinking(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on("OMITTED", thinking_script())
    request: Any = {
        "model": HYBRID,
        "max_tokens": 4000,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "messages": ask("OMITTED"),
    }
    whole = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        final = stream.get_final_message()
    for message in (whole, final):
        assert blocks(message) == [("text", "It is Paris.")]
        assert message.usage.output_tokens == 14  # the thinking is still counted
    assert sent(upstream, "OMITTED")["chat_template_kwargs"] == {"enable_thinking": True}


# --------------------------------------------------------------------------- tools


def test_a_tool_round_trip(client: anthropic.Anthropic, upstream: FakeOpenAIUpstream) -> None:
    upstream.on(
        "ROUNDTRIP-1",
        Script(
            reasoning=["Two cities, ", "two calls."],
            tool_calls=[
                ToolCallScript("get_weather", ['{"city": ', '"Paris"}'], id="call_w1"),
                ToolCallScript("get_weather", ['{"city": "Oslo"}'], id="call_w2"),
            ],
            usage=(40, 30, 6),
            reasoning_field=REASONING,
        ),
    )
    upstream.on("ROUNDTRIP-2", Script(text=["Paris is sunny; ", "Oslo is unknown."]))
    question: Any = {"role": "user", "content": "ROUNDTRIP-1: weather in Paris and Oslo?"}
    thinking: Any = {"type": "enabled", "budget_tokens": 1000}
    first = client.messages.create(
        model=HYBRID, max_tokens=2000, thinking=thinking, tools=[WEATHER], messages=[question]
    )
    assert first.stop_reason == "tool_use"
    (_, reasoning, signature), *calls = blocks(first)
    assert reasoning == "Two cities, two calls."
    assert signature
    assert calls == [
        ("tool_use", "call_w1", "get_weather", {"city": "Paris"}),
        ("tool_use", "call_w2", "get_weather", {"city": "Oslo"}),
    ]
    offered = sent(upstream, "ROUNDTRIP-1")
    assert offered["tools"] == [WEATHER_UPSTREAM]
    assert (offered["tool_choice"], offered["parallel_tool_calls"]) == ("auto", True)

    # Turn 2, as Claude Code sends it: the assistant turn echoed whole (thinking block and
    # its signature included), then the results, one as a string, one as blocks and failed.
    results: Any = {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "call_w1",
                "content": "18°C, sunny",
                "cache_control": {"type": "ephemeral"},
            },
            {
                "type": "tool_result",
                "tool_use_id": "call_w2",
                "content": [
                    {"type": "text", "text": "Station offline."},
                    {"type": "text", "text": "Try again later."},
                ],
                "is_error": True,
            },
            {"type": "text", "text": "ROUNDTRIP-2: so, what is it like?"},
        ],
    }
    second = client.messages.create(
        model=HYBRID,
        max_tokens=2000,
        thinking=thinking,
        tools=[WEATHER],
        messages=[question, {"role": "assistant", "content": first.content}, results],
    )
    assert blocks(second) == [("text", "Paris is sunny; Oslo is unknown.")]
    assert second.stop_reason == "end_turn"
    history = sent(upstream, "ROUNDTRIP-2")["messages"]
    assert with_decoded_arguments(history) == [
        {"role": "user", "content": "ROUNDTRIP-1: weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "Two cities, two calls.",  # where Qwen3's template reads it
            "tool_calls": [
                {
                    "id": "call_w1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                },
                {
                    "id": "call_w2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_w1", "content": "18°C, sunny"},
        {
            "role": "tool",
            "tool_call_id": "call_w2",
            "content": "Station offline.\nTry again later.",
        },
        {"role": "user", "content": "ROUNDTRIP-2: so, what is it like?"},
    ]
    assert all(isinstance(call["function"]["arguments"], str) for call in history[1]["tool_calls"])


def test_streamed_tool_input_accumulates_in_the_stream_helper(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on(
        "STREAMTOOL",
        Script(
            text=["Checking."],
            tool_calls=[ToolCallScript("get_weather", ['{"ci', 'ty": "Pa', 'ris"}'], id="call_s")],
        ),
    )
    deltas: list[str] = []
    with client.messages.stream(
        model=HYBRID, max_tokens=500, tools=[WEATHER], messages=ask("STREAMTOOL")
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                deltas.append(event.delta.partial_json)
        final = stream.get_final_message()
    assert "".join(deltas) == '{"city": "Paris"}'
    assert len(deltas) > 1
    assert blocks(final) == [
        ("text", "Checking."),
        ("tool_use", "call_s", "get_weather", {"city": "Paris"}),
    ]
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("choice", "upstream_choice", "parallel"),
    [
        ({"type": "auto"}, "auto", True),
        ({"type": "any"}, "required", True),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
            True,
        ),
        ({"type": "none"}, "none", True),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ],
    ids=["auto", "any", "tool", "none", "auto-single", "any-single"],
)
def test_tool_choice_reaches_the_upstream(
    client: anthropic.Anthropic,
    upstream: FakeOpenAIUpstream,
    choice: Any,
    upstream_choice: Any,
    parallel: bool,
) -> None:
    marker = f"CHOICE-{choice['type']}-{parallel}"
    calls = choice["type"] != "none"
    call = ToolCallScript("get_weather", ['{"city": "Rome"}'], id="call_c")
    upstream.on(marker, Script(tool_calls=[call]) if calls else Script(text=["No tools."]))
    message = client.messages.create(
        model=HYBRID, max_tokens=200, tools=[WEATHER], tool_choice=choice, messages=ask(marker)
    )
    body = sent(upstream, marker)
    assert body["tools"] == [WEATHER_UPSTREAM]
    assert body["tool_choice"] == upstream_choice
    assert body["parallel_tool_calls"] is parallel
    assert message.stop_reason == ("tool_use" if calls else "end_turn")


# --------------------------------------------------------------------------- stop sequences


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_stop_sequence_vllm_matched_is_named(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream, stream: bool
) -> None:
    # vLLM names the stop string it matched in `stop_reason`; a token id there (Qwen3's
    # <|im_end|>) is the model's own end of turn.
    upstream.on("STOPSEQ", Script(text=["1, 2, 3, ", "4, "], stop_reason="5"))
    upstream.on("EOSID", Script(text=["Done."], stop_reason=151645))
    for marker, reason, sequence in (
        ("STOPSEQ", "stop_sequence", "5"),
        ("EOSID", "end_turn", None),
    ):
        request: Any = {
            "model": HYBRID,
            "max_tokens": 100,
            "stop_sequences": ["5", "END"],
            "messages": ask(marker),
        }
        if stream:
            with client.messages.stream(**request) as streamed:
                message = streamed.get_final_message()
        else:
            message = client.messages.create(**request)
        assert (message.stop_reason, message.stop_sequence) == (reason, sequence)
        assert sent(upstream, marker)["stop"] == ["5", "END"]


# --------------------------------------------------------------------------- limits and models


def test_max_tokens_above_the_models_limit_is_clamped_not_refused(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    # The SDK refuses such a max_tokens without streaming (it would take too long).
    with client.messages.stream(
        model=HYBRID, max_tokens=1_000_000, messages=ask("HUGEMAX")
    ) as stream:
        final = stream.get_final_message()
    assert blocks(final) == [("text", "Echo: HUGEMAX: go on")]
    assert sent(upstream, "HUGEMAX")["max_tokens"] <= CONTEXT


def test_clamped_max_tokens_leaves_room_for_the_prompt(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    # Claude Code asks for 128000 tokens (its default for Claude ids) with a system prompt of
    # about 12K tokens. vLLM refuses any request whose prompt plus max_tokens exceeds the
    # context ("'max_tokens' ... is too large: 128000. This model's maximum context length is
    # 131072 tokens and your request has 12000 input tokens"), so a clamp to the context
    # alone is still refused upstream.
    system = "Follow the project's conventions. " * 1200
    messages = ask("ROOMY")
    counted = client.messages.count_tokens(model=HYBRID, system=system, messages=messages)
    assert counted.input_tokens > CONTEXT - 128_000
    with client.messages.stream(
        model=HYBRID, max_tokens=128_000, system=system, messages=messages
    ) as stream:
        stream.get_final_message()
    asked = sent(upstream, "ROOMY")["max_tokens"]
    assert 0 < asked <= CONTEXT - counted.input_tokens


def test_a_claude_model_id_is_a_404_that_says_what_to_set(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="claude-opus-5-5", max_tokens=100, messages=ask("CLAUDE"))
    body: Any = info.value.body
    assert body["error"]["type"] == "not_found_error"
    message = body["error"]["message"]
    for hint in ("claude-opus-5-5", "ANTHROPIC_MODEL", "MODELPORT_CLAUDE_MODEL", HYBRID):
        assert hint in message
    with (
        pytest.raises(anthropic.NotFoundError) as streamed,
        client.messages.stream(
            model="claude-opus-5-5", max_tokens=128_000, messages=ask("CLAUDE")
        ) as stream,
    ):
        stream.get_final_message()
    assert streamed.value.api_message == message
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="claude-opus-5-5", messages=ask("CLAUDE"))


def test_an_operator_can_serve_claude_ids_with_a_model_of_their_choice(
    tuned_gateway: RunningServer, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on("SERVED", Script(text=["Served."]))
    with sdk(tuned_gateway) as client:
        with client.messages.stream(
            model="claude-opus-5-5", max_tokens=128_000, messages=ask("SERVED")
        ) as stream:
            final = stream.get_final_message()
        counted = client.messages.count_tokens(model="claude-opus-5-5", messages=ask("SERVED"))
        plain = client.messages.count_tokens(model=HYBRID, messages=ask("SERVED"))
        model = client.models.retrieve("claude-sonnet-5")
    assert blocks(final) == [("text", "Served.")]
    assert sent(upstream, "SERVED")["model"] == UPSTREAM_NAMES[HYBRID]
    assert counted.input_tokens == plain.input_tokens
    assert model.id == HYBRID


def test_count_tokens_counts_qwen3_tokens_exactly(client: anthropic.Anthropic) -> None:
    def count(**request: Any) -> int:
        request.setdefault("messages", [{"role": "user", "content": "a"}])
        return client.messages.count_tokens(model=HYBRID, **request).input_tokens

    one = count()
    assert one > 0
    # " a" is one Qwen3 token: a hundred more of them are exactly a hundred more tokens (a
    # length estimate would say about fifty).
    assert count(messages=[{"role": "user", "content": "a" + " a" * 100}]) == one + 100
    assert count(system="You are terse.") > one
    assert count(tools=[WEATHER]) > count(system="You are terse.")
    longer: Any = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert count(messages=longer) > one
    # Thinking off is Qwen3's empty think block in the prompt: <think>, \n\n, </think>, \n\n.
    assert count(thinking=THINK_2000) == one - 4


# --------------------------------------------------------------------------- errors


# vLLM's two wordings for a prompt longer than the context: older versions say what was
# requested in all, newer ones how many input tokens the request has.
VLLM_OVERFLOW_REQUESTED = (
    "This model's maximum context length is 40960 tokens. However, you requested 50000 tokens "
    "(49000 in the messages, 1000 in the completion). Please reduce the length of the messages "
    "or completion."
)
VLLM_OVERFLOW_HAS = (
    "This model's maximum context length is 40960 tokens. However, your request has 50000 "
    "input tokens. Please reduce the length of the input messages."
)


def _overflow(message: str) -> Script:
    return Script(
        status=400,
        error_body={"error": {"message": message, "type": "BadRequestError", "code": 400}},
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("case", "script", "exception", "status", "kind"),
    [
        (
            "429",
            Script(status=429, headers={"Retry-After": "7"}),
            anthropic.RateLimitError,
            429,
            "rate_limit_error",
        ),
        (
            "503",
            Script(status=503, headers={"Retry-After": "7"}),
            anthropic.ServiceUnavailableError,
            503,
            "overloaded_error",
        ),
        ("504", Script(status=504), anthropic.GatewayTimeoutError, 504, "timeout_error"),
        (
            "500",
            Script(status=500, error_body="boom"),
            anthropic.InternalServerError,
            502,
            "api_error",
        ),
        (
            "overflow-requested",
            _overflow(VLLM_OVERFLOW_REQUESTED),
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
        ),
        (
            "overflow-has",
            _overflow(VLLM_OVERFLOW_HAS),
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
        ),
    ],
    ids=["429", "503", "504", "500", "overflow-requested", "overflow-has"],
)
def test_upstream_errors_reach_the_sdk_in_anthropics_shape(
    client: anthropic.Anthropic,
    upstream: FakeOpenAIUpstream,
    case: str,
    script: Script,
    exception: type[anthropic.APIStatusError],
    status: int,
    kind: str,
    stream: bool,
) -> None:
    marker = f"UPERR-{case}"
    upstream.on(marker, script)
    request: Any = {"model": HYBRID, "max_tokens": 100, "messages": ask(marker)}
    with pytest.raises(exception) as info:
        if stream:
            with client.messages.stream(**request) as streamed:
                streamed.get_final_message()
        else:
            client.messages.create(**request)
    error = info.value
    assert error.status_code == status
    body: Any = error.body
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    if case.startswith("overflow"):
        # The wording Claude Code parses to tell its user the conversation is too long.
        assert body["error"]["message"] == "prompt is too long: 50000 tokens > 40960 maximum"
    if "Retry-After" in script.headers:
        assert error.response.headers["retry-after"] == "7"


@pytest.mark.parametrize(
    ("stream_error", "kind", "says"),
    [
        # The upstream's own words go to the log; the client is told what happened.
        (
            {"error": {"message": "the engine crashed", "type": "server_error", "code": 500}},
            "api_error",
            "the upstream model server failed (HTTP 500)",
        ),
        (
            {"error": {"message": "too many requests", "type": "rate_limited", "code": 429}},
            "rate_limit_error",
            "the upstream model server is rate limiting the gateway (HTTP 429)",
        ),
    ],
    ids=["crash", "rate-limit"],
)
def test_an_error_mid_stream_raises_in_the_sdk_with_its_body(
    client: anthropic.Anthropic,
    upstream: FakeOpenAIUpstream,
    stream_error: Any,
    kind: str,
    says: str,
) -> None:
    marker = f"MIDERR-{kind}"
    upstream.on(marker, Script(text=["a", "b", "c", "d"], error_after=2, stream_error=stream_error))
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        client.messages.stream(model=HYBRID, max_tokens=100, messages=ask(marker)) as stream,
    ):
        received.extend(stream.text_stream)
    assert "".join(received) == "a"  # what arrived before the error
    body: Any = info.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert says in body["error"]["message"]


def test_a_body_over_the_limit_is_413(tuned_gateway: RunningServer) -> None:
    big: Any = [{"role": "user", "content": "word " * 20_000}]  # 100 KB > 64 KiB
    with sdk(tuned_gateway) as client:
        with pytest.raises(anthropic.ContentTooLargeError) as info:
            client.messages.create(model=HYBRID, max_tokens=10, messages=big)
        with pytest.raises(anthropic.ContentTooLargeError) as counted:
            client.messages.count_tokens(model=HYBRID, messages=big)
    for error in (info.value, counted.value):
        body: Any = error.body
        assert body["error"]["type"] == "request_too_large"
        assert "65536" in body["error"]["message"]


# --------------------------------------------------------------------------- both doors


def test_one_conversation_through_both_doors_reaches_the_upstream_the_same(
    client: anthropic.Anthropic, openai_client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on(
        "BOTHDOORS-1",
        Script(
            reasoning=["Paris, ", "so look it up."],
            text=["Let me check."],
            tool_calls=[ToolCallScript("get_weather", ['{"city": ', '"Paris"}'], id="call_b")],
            usage=(50, 20, 5),
            reasoning_field=REASONING,
        ),
    )
    upstream.on("BOTHDOORS-2", Script(text=["Sunny, 18°C."], usage=(80, 6)))
    system = "Answer briefly."
    question = "BOTHDOORS-1: weather in Paris?"
    thinking_on: Any = {"reasoning": {"enabled": True, "max_tokens": 2000}}

    # Turn 1.
    chat = openai_client.chat.completions.create(
        model=HYBRID,
        max_tokens=4000,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        tools=[WEATHER_UPSTREAM],
        extra_body=thinking_on,
    )
    via_openai = sent(upstream, "BOTHDOORS-1")
    message = client.messages.create(
        model=HYBRID,
        max_tokens=4000,
        system=system,
        messages=[{"role": "user", "content": question}],
        tools=[WEATHER],
        thinking=THINK_2000,
    )
    via_anthropic = sent(upstream, "BOTHDOORS-1")
    assert via_anthropic is not via_openai
    assert via_anthropic == via_openai

    answer = chat.choices[0].message
    (call,) = answer.tool_calls or []
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    (_, thinking, signature), text, tool_use = blocks(message)
    assert signature
    assert thinking == (answer.model_extra or {})["reasoning"] == "Paris, so look it up."
    assert text == ("text", answer.content) == ("text", "Let me check.")
    assert tool_use == (
        "tool_use",
        call.id,
        call.function.name,
        json.loads(call.function.arguments),
    )
    assert (message.stop_reason, chat.choices[0].finish_reason) == ("tool_use", "tool_calls")

    # Turn 2: each door's own way of sending the call back with its result.
    openai_history: Any = [
        {"role": "system", "content": system},
        {"role": "user", "content": question},
        {
            "role": "assistant",
            "content": answer.content,
            "reasoning_content": (answer.model_extra or {})["reasoning"],
            "tool_calls": [call.model_dump(exclude_none=True)],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "18°C, sunny"},
        {"role": "user", "content": "BOTHDOORS-2: and now?"},
    ]
    openai_client.chat.completions.create(
        model=HYBRID,
        max_tokens=4000,
        messages=openai_history,
        tools=[WEATHER_UPSTREAM],
        extra_body=thinking_on,
    )
    second_openai = sent(upstream, "BOTHDOORS-2")
    client.messages.create(
        model=HYBRID,
        max_tokens=4000,
        system=system,
        messages=[
            {"role": "user", "content": question},
            {"role": "assistant", "content": message.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool_use[1], "content": "18°C, sunny"},
                    {"type": "text", "text": "BOTHDOORS-2: and now?"},
                ],
            },
        ],
        tools=[WEATHER],
        thinking=THINK_2000,
    )
    second_anthropic = sent(upstream, "BOTHDOORS-2")
    assert second_anthropic is not second_openai
    assert second_anthropic["messages"][2]["reasoning_content"] == "Paris, so look it up."
    assert second_anthropic == second_openai

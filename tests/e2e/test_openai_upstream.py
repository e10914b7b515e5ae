"""The OpenAI door in front of a scripted OpenAI-compatible upstream, end to end: the real
server in a subprocess, a fake upstream speaking real SSE over HTTP, the official SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from tests.e2e.server import RunningServer, free_port
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script, ToolCallScript

pytestmark = pytest.mark.e2e

QWEN = "qwen/qwen3-8b"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(models=("Qwen/Qwen3-8B",))
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream
) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp("gateway")
    config = data_dir / "modelport.toml"
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config.write_text(
        f"""
[[models]]
id = "qwen/qwen3-8b"
  [[models.backends]]
  kind = "openai_compat"
  url = "{upstream.base_url}"
  dialect = "vllm"
  upstream_model = "Qwen/Qwen3-8B"
  api_key = "env:FAKE_UPSTREAM_KEY"

[[models]]
id = "qwen/qwen3-coder"
  [[models.backends]]
  kind = "openai_compat"
  name = "unreachable"
  url = "{dead}"
  priority = 0
  [[models.backends]]
  kind = "openai_compat"
  name = "fallback"
  url = "{upstream.base_url}"
  priority = 1
"""
    )
    server = RunningServer(data_dir, config=config, env={"FAKE_UPSTREAM_KEY": "upstream-secret"})
    with server:
        yield server


@pytest.fixture
def client(gateway: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.base_url + "/v1", api_key=gateway.admin_key, max_retries=0
    )


def ask(marker: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{marker} please"}]


def test_plain_answer_relays_text_reasoning_and_exact_usage(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on(
        "PLAIN",
        Script(reasoning=["Let me ", "think."], text=["Hello", ", world"], usage=(12, 7, 3)),
    )
    response = client.chat.completions.create(model=QWEN, messages=ask("PLAIN"))
    message = response.choices[0].message
    assert message.content == "Hello, world"
    assert (message.model_extra or {})["reasoning"] == "Let me think."
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (12, 7)
    assert response.usage.completion_tokens_details is not None
    assert response.usage.completion_tokens_details.reasoning_tokens == 3
    assert response.model == QWEN
    sent = upstream.requests[-1]
    assert sent.body["model"] == "Qwen/Qwen3-8B"
    # A client that reads the whole answer gets it from one upstream JSON body.
    assert sent.body["stream"] is False
    assert "stream_options" not in sent.body
    assert sent.headers["Authorization"] == "Bearer upstream-secret"


def test_parameters_and_unknown_fields_reach_the_upstream(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    client.chat.completions.create(
        model=QWEN,
        messages=ask("PARAMS"),
        temperature=0,
        top_p=0.5,
        seed=3,
        max_tokens=50,
        stop=["END"],
        extra_body={"top_k": 20, "min_p": 0.1, "vendor_flag": {"x": 1}},
    )
    body = upstream.requests[-1].body
    assert body["temperature"] == 0
    assert body["top_p"] == 0.5
    assert body["seed"] == 3
    assert body["max_tokens"] == 50
    assert body["stop"] == ["END"]
    assert body["top_k"] == 20
    assert body["min_p"] == 0.1
    assert body["vendor_flag"] == {"x": 1}


def test_qwen_recommended_sampling_fills_what_the_client_left_unset(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    # Thinking (the hybrid model's default mode): 0.6 / 0.95 / top_k 20; the client's own
    # value is kept.
    client.chat.completions.create(model=QWEN, messages=ask("PARAMS"), top_p=0.5)
    thinking = upstream.requests[-1].body
    assert (thinking["temperature"], thinking["top_p"], thinking["top_k"]) == (0.6, 0.5, 20)
    # Thinking off: Qwen's non-thinking values.
    client.chat.completions.create(model=QWEN, messages=ask("PARAMS"), reasoning_effort="none")
    plain = upstream.requests[-1].body
    assert (plain["temperature"], plain["top_p"], plain["top_k"]) == (0.7, 0.8, 20)
    # Coder: non-thinking values and a repetition penalty.
    client.chat.completions.create(model="qwen/qwen3-coder", messages=ask("PARAMS"))
    coder = upstream.requests[-1].body
    assert coder["temperature"] == 0.7
    assert coder["repetition_penalty"] == 1.05
    # An effort becomes vLLM's thinking budget: 0.2 x 10000 tokens.
    client.chat.completions.create(
        model=QWEN, messages=ask("PARAMS"), reasoning_effort="low", max_tokens=10_000
    )
    assert upstream.requests[-1].body["thinking_token_budget"] == 2000
    assert "thinking_token_budget" not in plain
    # Published on the model list (the whole catalog's: thinking-2507 has no backend here).
    catalog = client.models.list(extra_query={"all": "true"})
    listed = {m.id: m.model_extra or {} for m in catalog}
    assert listed[QWEN]["default_parameters"] == {
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
        "min_p": 0,
    }
    assert listed[QWEN]["default_parameters_by_mode"]["non_thinking"]["temperature"] == 0.7
    assert listed["qwen/qwen3-235b-a22b-thinking-2507"]["default_parameters"]["top_p"] == 0.95


def test_streamed_tool_calls_accumulate_in_the_sdk(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on(
        "TOOLS",
        Script(
            tool_calls=[
                ToolCallScript("get_weather", ['{"city": ', '"Paris"}'], id="call_a"),
                ToolCallScript("get_time", ["{}"], id="call_b"),
            ],
            usage=(30, 20),
        ),
    )
    tools: Any = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]
    with client.chat.completions.stream(model=QWEN, messages=ask("TOOLS"), tools=tools) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_time", "{}"),
    ]


def test_tool_calls_an_upstream_parsed_are_checked(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    weather: Any = [
        {
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
    ]
    # Arguments that break the tool's schema, and a function that was never offered.
    upstream.on("BADARGS", Script(tool_calls=[ToolCallScript("get_weather", ['{"town": 1}'])]))
    upstream.on("NOSUCH", Script(tool_calls=[ToolCallScript("launch_rocket", ["{}"])]))
    for marker, says in (("BADARGS", "'city' is a required property"), ("NOSUCH", "launch_rocket")):
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model=QWEN, messages=ask(marker), tools=weather)
        assert info.value.status_code == 502
        assert says in info.value.message
    # parallel_tool_calls=false: an upstream that sends two anyway is cut to the first.
    upstream.on(
        "TWICE",
        Script(
            tool_calls=[
                ToolCallScript("get_weather", ['{"city": "Oslo"}']),
                ToolCallScript("get_weather", ['{"city": "Rome"}']),
            ]
        ),
    )
    response = client.chat.completions.create(
        model=QWEN, messages=ask("TWICE"), tools=weather, parallel_tool_calls=False
    )
    calls = response.choices[0].message.tool_calls or []
    assert [c.function.arguments for c in calls] == ['{"city": "Oslo"}']  # type: ignore[union-attr]
    assert response.choices[0].finish_reason == "tool_calls"


def test_stream_with_usage_and_reasoning_deltas(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on("STREAM", Script(reasoning=["a", "b"], text=["x", "y"], usage=(5, 4, 2)))
    chunks = list(
        client.chat.completions.create(
            model=QWEN, messages=ask("STREAM"), stream=True, stream_options={"include_usage": True}
        )
    )
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning") or "" for c in chunks if c.choices
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (reasoning, content) == ("ab", "xy")
    sent = upstream.requests[-1].body
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 9
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


@pytest.mark.parametrize(
    ("script", "status", "code"),
    [
        (Script(status=400, error_body={"error": {"message": "bad stop"}}), 400, "invalid_request"),
        (
            Script(
                status=400,
                error_body={
                    "error": {
                        "message": "This model's maximum context length is 40960 tokens. "
                        "However, you requested 50000 tokens."
                    }
                },
            ),
            400,
            "context_length_exceeded",
        ),
        (Script(status=500, error_body="boom"), 502, "upstream_error"),
        (Script(status=503, headers={"Retry-After": "7"}), 503, "overloaded"),
    ],
)
def test_upstream_errors_map_onto_ours(
    gateway: RunningServer,
    upstream: FakeOpenAIUpstream,
    script: Script,
    status: int,
    code: str,
) -> None:
    upstream.on(f"ERR{status}{code}", script)
    response = httpx.post(
        gateway.base_url + "/v1/chat/completions",
        json={"model": QWEN, "messages": ask(f"ERR{status}{code}")},
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
        timeout=30,
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert "upstream-secret" not in response.text
    if status == 503:
        assert response.headers["retry-after"] == "7"


def test_error_mid_stream_ends_with_an_error_chunk(
    gateway: RunningServer, client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on("MIDERR", Script(text=["a", "b", "c", "d"], error_after=2))
    # The SDK raises on the error chunk, after the text that did arrive.
    received: list[str] = []
    with pytest.raises(openai.APIError, match="failed"):
        for chunk in client.chat.completions.create(
            model=QWEN, messages=ask("MIDERR"), stream=True
        ):
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(received) == "a"
    # On the wire: a final chunk with finish_reason "error" and the error, then [DONE].
    raw = httpx.post(
        gateway.base_url + "/v1/chat/completions",
        json={"model": QWEN, "messages": ask("MIDERR"), "stream": True},
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
        timeout=30,
    ).text
    events = [block for block in raw.split("\n\n") if block]
    assert events[-1] == "data: [DONE]"
    assert '"finish_reason":"error"' in events[-2]
    assert '"error":{' in events[-2]


def test_failover_to_the_next_backend_before_the_first_token(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="qwen/qwen3-coder", messages=[{"role": "user", "content": "failover works"}]
    )
    assert (
        response.choices[0].message.content
        == "Echo: failover works please"[: len("Echo: failover works")]
    )


def test_client_disconnect_closes_the_upstream_stream(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on("SLOW", Script(text=[f"t{i} " for i in range(200)], delay=0.02))
    stream = client.chat.completions.create(model=QWEN, messages=ask("SLOW"), stream=True)
    for index, _ in enumerate(stream):
        if index == 3:
            break
    stream.close()
    deadline = time.monotonic() + 5
    record = next(r for r in reversed(upstream.requests) if "SLOW" in str(r.body))
    while time.monotonic() < deadline and not record.disconnected:
        time.sleep(0.05)
    assert record.disconnected
    assert not record.completed


def test_a_client_that_leaves_while_the_upstream_is_silent_closes_it_within_a_second(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    """No write fails while nothing is sent: the gateway watches the client itself."""
    upstream.on("SILENT", Script(text=["late ", "answer"], delay=5.0))
    stream = client.chat.completions.create(model=QWEN, messages=ask("SILENT"), stream=True)
    first = next(iter(stream))  # the response has begun (role chunk); the upstream is silent
    assert first.choices[0].delta.role == "assistant"
    left = time.monotonic()
    stream.close()
    record = next(r for r in reversed(upstream.requests) if "SILENT" in str(r.body))
    while time.monotonic() - left < 4 and not record.disconnected:
        time.sleep(0.02)
    assert record.disconnected
    assert time.monotonic() - left < 1.5  # long before its next chunk (5 s)
    assert not record.completed

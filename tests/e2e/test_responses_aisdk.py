"""The AI SDK's default OpenAI provider (`openai(id)`, which speaks the Responses API) against
a real server: generateText, streamText and a tool round trip (tests/clients/aisdk/run.mjs)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.server import RunningServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script, ToolCallScript
from tests.support.scripted import scripted_model_config

CLIENT = Path(__file__).parents[1] / "clients" / "aisdk"
MODEL = "fake/responder"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream()
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream
) -> Iterator[RunningServer]:
    if shutil.which("node") is None or not (CLIENT / "node_modules" / "ai").is_dir():
        pytest.skip("missing node or the AI SDK: run scripts/install-sample-tools.sh")
    data = tmp_path_factory.mktemp("aisdk")
    config = scripted_model_config(data, upstream.base_url, MODEL, thinking="none")
    with RunningServer(data, config) as running:
        yield running


def test_generate_stream_and_a_tool_round_trip(
    server: RunningServer, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on("GREET", Script(text=["Hello ", "from modelport."]))
    upstream.enqueue(
        Script(tool_calls=[ToolCallScript("get_weather", ('{"city": "Hangzhou"}',), id="c1")]),
        Script(text=["It is sunny in Hangzhou."]),
    )
    done = subprocess.run(
        [
            "node",
            str(CLIENT / "run.mjs"),
            *("--base", server.base_url, "--key", server.admin_key),
            *("--model", MODEL, "--tool-model", MODEL),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["generate"]["text"] == "Hello from modelport."
    assert result["generate"]["usage"]["inputTokens"] > 0
    assert result["stream"]["text"] == "Hello from modelport."
    assert result["tool"]["calls"] == ["Hangzhou"]
    assert result["tool"]["text"] == "It is sunny in Hangzhou."
    # The second step sent the tool's result back as a function_call_output.
    messages = upstream.requests[-1].body["messages"]
    assert messages[-1]["role"] == "tool" and "sunny in Hangzhou" in messages[-1]["content"]

"""OpenAI's Codex CLI (`@openai/codex`, real and headless, offline) against the server's
Responses API, over a scripted upstream: a plain turn, and a turn where the model calls one of
Codex's function tools (`exec_command`), Codex runs it and sends its output back, and the
model answers. Codex keeps no server-side state (`store: false`) and hands its reasoning back
sealed."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.server import RunningServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script, ToolCallScript
from tests.support.scripted import scripted_model_config

CODEX = Path(__file__).parents[1] / "clients" / "codex" / "node_modules" / ".bin" / "codex"
MODEL = "fake/coder"


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
    if not CODEX.exists():
        pytest.skip("missing the Codex CLI: run scripts/install-sample-tools.sh")
    data = tmp_path_factory.mktemp("codex")
    config = scripted_model_config(data, upstream.base_url, MODEL, thinking="always")
    with RunningServer(data, config) as running:
        yield running


def codex(server: RunningServer, home: Path, prompt: str) -> subprocess.CompletedProcess[str]:
    (home / ".codex").mkdir(parents=True, exist_ok=True)
    (home / ".codex" / "config.toml").write_text(
        f'model = "{MODEL}"\nmodel_provider = "mp"\n[model_providers.mp]\nname = "modelport"\n'
        f'base_url = "{server.base_url}/v1"\nenv_key = "MP_KEY"\nwire_api = "responses"\n'
        "request_max_retries = 0\nstream_max_retries = 0\n"
    )
    work = home / "work"
    work.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(home),
        "CODEX_HOME": str(home / ".codex"),
        "MP_KEY": server.admin_key,
    }
    return subprocess.run(
        [str(CODEX), "exec", "--skip-git-repo-check", prompt],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_a_plain_turn(server: RunningServer, upstream: FakeOpenAIUpstream, tmp_path: Path) -> None:
    upstream.enqueue(Script(reasoning=["The user wants pong."], text=["pong"]))
    done = codex(server, tmp_path, "Say pong")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("pong")
    body = upstream.requests[-1].body
    names = [tool["function"]["name"] for tool in body["tools"]]
    assert "exec_command" in names and "web_search" not in names  # hosted tools left out


def test_a_turn_where_the_model_runs_a_codex_tool(
    server: RunningServer, upstream: FakeOpenAIUpstream, tmp_path: Path
) -> None:
    call = json.dumps({"cmd": "echo codex-tool-ok"})
    upstream.enqueue(
        Script(
            reasoning=["I should run the command."],
            tool_calls=[ToolCallScript("exec_command", (call,), id="call_exec_1")],
        ),
        Script(text=["The command printed codex-tool-ok."]),
    )
    done = codex(server, tmp_path, "Run echo codex-tool-ok and tell me what it printed")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "The command printed codex-tool-ok." in done.stdout
    messages = upstream.requests[-1].body["messages"]
    results = [m for m in messages if m.get("role") == "tool"]
    assert results and results[-1]["tool_call_id"] == "call_exec_1"
    assert "codex-tool-ok" in results[-1]["content"]  # Codex ran it and sent its output
    # Its own earlier reasoning came back (sealed) with the turn that called the tool.
    assert "I should run the command." in json.dumps(messages)

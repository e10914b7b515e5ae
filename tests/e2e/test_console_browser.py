"""The console in headless Chromium (Debian's, driven by Playwright through its executable
path): sign up → create a key (copied) → call the API with it through the OpenAI SDK → the
playground streams an answer with the reasoning apart → the usage page shows the calls → an
admin's top-up shows on the billing page and a top-up code is redeemed once → log out.
Screenshots go to tests/browser/artifacts/console-1/ and console-2/."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from tests.e2e.server import RunningServer
from tests.e2e.test_web_browser import BROWSER, artifacts, skip_if_missing
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script

LOCAL = "local/smollm2-135m-instruct"


THINKER = "fake/thinker"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with the local model and a thinking model behind a scripted upstream (the
    playground shows its reasoning apart from the answer)."""
    skip_if_missing(browser=True)
    upstream = FakeOpenAIUpstream()
    url = upstream.start_in_thread()
    upstream.on(
        "THINK",
        Script(reasoning=["Weighing ", "the greeting."], text=["Hello ", "there!"], usage=(9, 6)),
    )
    data = tmp_path_factory.mktemp("console-browser")
    config = data / "modelport.toml"
    config.write_text(
        f'[[models]]\nid = "{THINKER}"\nname = "Thinker"\ndescription = "scripted"\n'
        'context_length = 32768\nthinking = "always"\n'
        f'[[models.backends]]\nkind = "openai_compat"\nurl = "{url}"\n'
    )
    try:
        with RunningServer(data, config, env={"MODELPORT_SIGNUP_CREDIT": "5"}) as running:
            yield running
    finally:
        upstream.stop_thread()


def run(server: RunningServer, phase: str, state: Path, *extra: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            "node",
            str(BROWSER / "console.mjs"),
            "--base",
            server.base_url,
            "--phase",
            phase,
            "--state",
            str(state),
            "--out",
            str(artifacts(f"console-{phase}")),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"console.mjs printed nothing:\n{done.stderr[-3000:]}"
    summary: dict[str, Any] = json.loads(lines[-1])
    assert summary["ok"], json.dumps(summary, indent=2)
    return summary


def test_sign_up_key_sdk_playground_usage_log_out(server: RunningServer, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = run(server, "1", state, "--user", "pw-user")
    secret = first["secret"]
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key=secret, max_retries=0) as api:
        answer = api.chat.completions.create(
            model=LOCAL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8
        )
    assert answer.choices[0].message.content is not None
    # An admin tops the user up (the admin API), and makes a top-up code (the CLI).
    topped = httpx.post(
        server.base_url + "/api/v1/admin/users/pw-user/topup",
        headers={"authorization": f"Bearer {server.admin_key}"},
        json={"amount": "10", "reason": "welcome"},
        timeout=30,
    )
    assert topped.status_code == 200, topped.text
    balance = topped.json()["balance"]
    made = server.cli("codes", "create", "--count", "1", "--amount", "2")
    code = re.search(r"MPC(-[A-Z0-9]{4}){4}", made.stdout)
    assert code is not None, made.stdout + made.stderr
    second = run(
        server,
        "2",
        state,
        "--key",
        secret,
        "--model",
        THINKER,
        "--message",
        "THINK",
        "--max-tokens",
        "256",
        "--balance",
        balance,
        "--code",
        code.group(0),
    )
    billing = next(s for s in second["steps"] if s["name"] == "billing")
    assert billing["before"] == f"¥{balance}"
    assert Decimal(billing["after"][1:]) == Decimal(balance) + 2
    played = next(s for s in second["steps"] if s["name"] == "playground")
    assert played["reasoning"] == "Weighing the greeting."  # apart from the answer
    assert played["answer"] == "Hello there!"
    usage_step = next(s for s in second["steps"] if s["name"] == "usage")
    assert THINKER in usage_step["row"]

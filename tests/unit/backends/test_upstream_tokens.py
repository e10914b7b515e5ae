"""Exact token counts for OpenAI-compatible upstreams (`backends/upstream_tokens.py`): the
Qwen3 tokenizer, a Hugging Face tokenizer.json with its chat template, and the engines' own
tokenize endpoints, against the fake upstream over real HTTP.

The fake tokenizes with Qwen3's real tokenizer and renders a real Jinja template; the
tokenizer.json is Qwen3's, written from Qwen's BPE ranks (tests/support/qwen3_tokenizer_json).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import tokenizers
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tests.fakes.openai_upstream import CHATML_TEMPLATE, FakeOpenAIUpstream, Script
from tests.support.qwen3_gguf import TEMPLATE_PATH
from tests.support.qwen3_tokenizer_json import cached_qwen3_tokenizer_dir

from modelport.backends import upstream_tokens
from modelport.backends.base import CallContext, TokenCounter
from modelport.backends.chat_template import ChatTemplate
from modelport.backends.openai_compat import OpenAICompatEngine
from modelport.core.catalog import ConfigError, ModelCard, OpenAICompatBackend
from modelport.core.collect import collect
from modelport.core.types import (
    ChatRequest,
    ImagePart,
    Message,
    Reasoning,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
)
from modelport.protocols.openai.messages import openai_messages, openai_tool
from modelport.protocols.qwen3.prompt import render_prompt
from modelport.tokenizers.qwen3 import Qwen3Tokenizer, qwen3_tokenizer

T = TypeVar("T")

# Not a Qwen3 card (no thinking, no Qwen3 tool calls): counted by the configured sources.
CARD = ModelCard(id="acme/chat-1", name="Chat", description="test card", context_length=32768)
QWEN3_CARD = ModelCard(
    id="qwen/qwen3-8b",
    name="Qwen3 8B",
    description="test card",
    context_length=32768,
    thinking="hybrid",
    tool_format="qwen3_json",
)
BOS = 151643  # <|endoftext|>, as a model that adds BOS would
TOKENIZER_PATHS = ("/tokenize", "/apply-template", "/extras/tokenize")

WEATHER = Tool(
    name="get_weather",
    description="The weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


def qwen3() -> Qwen3Tokenizer:
    tokenizer = qwen3_tokenizer()
    assert tokenizer is not None, "dashscope's qwen.tiktoken is missing: run `make install`"
    return tokenizer


def request(text: str = "What is the capital of France?", **fields: Any) -> ChatRequest:
    return ChatRequest(model=CARD.id, messages=(Message("user", (TextPart(text),)),), **fields)


def conversation() -> ChatRequest:
    """System, user, an assistant turn with a tool call, its result and the next question."""
    return ChatRequest(
        model=CARD.id,
        messages=(
            Message("system", (TextPart("You are terse."),)),
            Message("user", (TextPart("Weather in 北京?"),)),
            Message(
                "assistant",
                (ToolCallPart("call_1", "get_weather", '{"city": "北京"}'),),
            ),
            Message("user", (ToolResultPart("call_1", "sunny, 25°C"), TextPart("And tomorrow?"))),
        ),
        tools=(WEATHER,),
    )


@pytest.fixture(scope="session")
def tokenizer_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Written once into pytest's cache (.pytest_cache), or per run where that plugin is off.
    cache = getattr(request.config, "cache", None)
    directory = (
        cache.mkdir("qwen3-tokenizer") if cache is not None else tmp_path_factory.mktemp("t")
    )
    return cached_qwen3_tokenizer_dir(directory)


@pytest.fixture(scope="session")
def hf(tokenizer_dir: Path) -> tokenizers.Tokenizer:
    """The tokenizer.json as the tokenizers library itself loads it: the reference."""
    return tokenizers.Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


def hf_count(tokenizer: tokenizers.Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeOpenAIUpstream]:
    async with FakeOpenAIUpstream() as upstream:
        yield upstream


class Engines:
    """Builds started engines and closes them all at the end of a test."""

    def __init__(self) -> None:
        self.started: list[OpenAICompatEngine] = []

    async def __call__(
        self, url: str, *, card: ModelCard = CARD, start: bool = True, **config: Any
    ) -> OpenAICompatEngine:
        settings: dict[str, Any] = {"timeout": 5.0, "connect_timeout": 1.0}
        settings.update(config)
        engine = OpenAICompatEngine(OpenAICompatBackend(url=url, **settings), card, api_key="sk-k")
        self.started.append(engine)
        if start:
            await engine.start()
        return engine


@pytest_asyncio.fixture
async def engines() -> AsyncIterator[Engines]:
    made = Engines()
    yield made
    for engine in made.started:
        await engine.aclose()


def tokenizer_requests(fake: FakeOpenAIUpstream) -> list[tuple[str, Any]]:
    return [(r.path, r.body) for r in fake.requests if r.path in TOKENIZER_PATHS]


def chatml(messages: list[dict[str, Any]]) -> str:
    """The fake's default template, rendered independently of modelport."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(CHATML_TEMPLATE).render(messages=messages, add_generation_prompt=True)


# --------------------------------------------------------------------------- llama.cpp's server


@pytest.mark.asyncio
async def test_llamacpp_server_counts_text_with_its_tokenize_endpoint(
    engines: Engines,
) -> None:
    async with FakeOpenAIUpstream(bos_id=BOS) as fake:
        engine = await engines(fake.base_url, dialect="llamacpp_server")
        assert isinstance(engine, TokenCounter)
        text = "Paris is the capital of France. <think>not special here</think> 北京"
        assert await engine.count_text(text) == qwen3().count(text)
        [(path, body)] = tokenizer_requests(fake)
        assert path == "/tokenize"  # at the server's root, not under /v1
        assert body == {"content": text, "add_special": False, "parse_special": True}
        assert fake.requests[0].headers["Authorization"] == "Bearer sk-k"
        assert await engine.count_text("") == 0  # no round trip for nothing


@pytest.mark.asyncio
async def test_llamacpp_server_counts_a_prompt_with_its_own_template_and_bos(
    engines: Engines,
) -> None:
    async with FakeOpenAIUpstream(bos_id=BOS) as fake:
        engine = await engines(fake.base_url, dialect="llamacpp_server")
        req = ChatRequest(
            model=CARD.id,
            messages=(
                Message("system", (TextPart("Be brief."),)),
                Message("user", (TextPart("What is 2+2?"),)),
            ),
            chat_template_kwargs={"custom": 1},
        )
        counted = await engine.count_tokens(req)
        prompt = chatml(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 2+2?"},
            ]
        )
        assert counted == 1 + qwen3().count(prompt)  # the BOS the engine adds to a prompt
        [(template_path, sent), (tokenize_path, tokenized)] = tokenizer_requests(fake)
        assert template_path == "/apply-template"
        assert sent == {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 2+2?"},
            ],
            "chat_template_kwargs": {"custom": 1},
        }
        assert tokenize_path == "/tokenize"
        assert tokenized == {"content": prompt, "add_special": True, "parse_special": True}


@pytest.mark.asyncio
async def test_tools_reach_the_template_endpoint(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    engine = await engines(fake.base_url, dialect="llamacpp_server")
    assert await engine.count_tokens(conversation()) is not None
    _, sent = tokenizer_requests(fake)[0]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == "auto"
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool", "user"]


# --------------------------------------------------------------------------- llama-cpp-python


@pytest.mark.asyncio
async def test_llama_cpp_python_counts_text_less_the_bos_it_always_adds(engines: Engines) -> None:
    async with FakeOpenAIUpstream(bos_id=BOS) as fake:
        engine = await engines(fake.base_url, dialect="llama_cpp_python")
        first, second = "Hello there, world!", "Second text  with   spaces\n\n"
        assert await engine.count_text(first) == qwen3().count(first)
        assert await engine.count_text(second) == qwen3().count(second)
        # What "" tokenizes to (the BOS) is asked once, then subtracted from every count.
        assert tokenizer_requests(fake) == [
            ("/extras/tokenize", {"input": ""}),
            ("/extras/tokenize", {"input": first}),
            ("/extras/tokenize", {"input": second}),
        ]


@pytest.mark.asyncio
async def test_llama_cpp_python_counts_a_prompt_only_with_a_configured_template(
    fake: FakeOpenAIUpstream, engines: Engines, tmp_path: Path
) -> None:
    bare = await engines(fake.base_url, dialect="llama_cpp_python")
    assert await bare.count_tokens(request()) is None  # it has no template endpoint
    assert tokenizer_requests(fake) == []
    template_file = tmp_path / "template.jinja"
    template_file.write_text(CHATML_TEMPLATE, encoding="utf-8")
    engine = await engines(
        fake.base_url, dialect="llama_cpp_python", chat_template=str(template_file)
    )
    prompt = chatml([{"role": "user", "content": "What is the capital of France?"}])
    assert await engine.count_tokens(request()) == qwen3().count(prompt)
    assert tokenizer_requests(fake)[-1] == ("/extras/tokenize", {"input": prompt})


@pytest.mark.asyncio
async def test_a_template_that_needs_an_unknown_bos_text_does_not_count(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    # Without tokenizer_config.json nobody says what {{ bos_token }} is: the count would be off.
    template = "{{ bos_token }}" + CHATML_TEMPLATE
    engine = await engines(fake.base_url, dialect="llama_cpp_python", chat_template=template)
    assert await engine.count_tokens(request()) is None
    assert tokenizer_requests(fake) == []


# --------------------------------------------------------------------------- local_only


@pytest.mark.parametrize("dialect", ["llamacpp_server", "llama_cpp_python"])
@pytest.mark.asyncio
async def test_local_only_never_touches_the_network(
    fake: FakeOpenAIUpstream, engines: Engines, dialect: str
) -> None:
    engine = await engines(fake.base_url, dialect=dialect, chat_template=CHATML_TEMPLATE)
    assert await engine.count_tokens(request(), local_only=True) is None
    assert await engine.count_text("some output", local_only=True) is None
    assert fake.requests == []


@pytest.mark.asyncio
async def test_a_large_max_tokens_is_fitted_without_asking_the_engine(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    engine = await engines(fake.base_url, dialect="llamacpp_server")
    await collect(engine.stream(request(max_output_tokens=30000), CallContext("r", CARD)))
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"]


@pytest.mark.asyncio
async def test_the_prompt_size_counted_at_admission_is_used_not_counted_again(
    fake: FakeOpenAIUpstream, engines: Engines, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await engines(fake.base_url, tokenizer=str(tokenizer_dir / "tokenizer.json"))

    async def never(*args: Any, **kwargs: Any) -> int:
        raise AssertionError("counted again")

    monkeypatch.setattr(engine, "count_tokens", never)
    ctx = CallContext("r", CARD, prompt_tokens=30000, prompt_exact=True)
    await collect(engine.stream(request(max_output_tokens=20000), ctx))
    assert fake.requests[-1].body["max_tokens"] == CARD.context_length - 30000


@pytest.mark.asyncio
async def test_without_an_admission_count_the_prompt_is_counted_in_process(
    fake: FakeOpenAIUpstream, engines: Engines, tokenizer_dir: Path
) -> None:
    engine = await engines(fake.base_url, tokenizer=str(tokenizer_dir / "tokenizer.json"))
    long = "word " * 10000
    await collect(engine.stream(request(long, max_output_tokens=30000), CallContext("r", CARD)))
    exact = await engine.count_tokens(request(long))
    assert exact is not None
    assert fake.requests[-1].body["max_tokens"] == CARD.context_length - exact


# --------------------------------------------------------------------------- failures


@pytest.mark.asyncio
async def test_a_failing_endpoint_gives_none_and_one_warning(
    fake: FakeOpenAIUpstream, engines: Engines, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await engines(fake.base_url, dialect="llamacpp_server")
    fake.tokenize_status = 500
    with caplog.at_level(logging.WARNING, logger="modelport.backends.engine_tokenize"):
        assert await engine.count_text("one") is None
        assert await engine.count_text("two") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"127.0.0.1:{fake.port}/tokenize" in warnings[0]
    assert "HTTP 500" in warnings[0]
    assert "sk-k" not in warnings[0]
    fake.tokenize_status = 200  # a passing failure: asked again, and it counts
    assert await engine.count_text("three") == qwen3().count("three")


@pytest.mark.asyncio
async def test_an_endpoint_the_engine_lacks_is_not_asked_again(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    engine = await engines(fake.base_url, dialect="llamacpp_server")
    fake.tokenize_status = 404
    assert await engine.count_tokens(request()) is None
    fake.tokenize_status = 200
    assert await engine.count_tokens(request()) is None
    assert [path for path, _ in tokenizer_requests(fake)] == ["/apply-template"]
    # Text is still counted: /tokenize was never found missing.
    assert await engine.count_text("abc") == qwen3().count("abc")


@pytest.mark.asyncio
async def test_a_slow_endpoint_times_out_to_none(
    fake: FakeOpenAIUpstream, engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await engines(fake.base_url, dialect="llamacpp_server")
    monkeypatch.setattr(engine._tokens._engine, "_timeout", 0.2)  # type: ignore[union-attr]
    fake.tokenize_delay = 2.0
    began = time.monotonic()
    assert await engine.count_text("slow") is None
    assert time.monotonic() - began < 1.5
    fake.tokenize_delay = 0.0
    assert await engine.count_text("fast") == qwen3().count("fast")


@pytest.mark.asyncio
async def test_an_unreachable_engine_gives_none(engines: Engines) -> None:
    async with FakeOpenAIUpstream() as gone:
        url = gone.base_url
    engine = await engines(url, dialect="llamacpp_server")
    assert await engine.count_text("anything") is None
    assert await engine.count_tokens(request()) is None


@pytest.mark.asyncio
async def test_dialects_without_endpoints_count_nothing(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    for dialect in ("generic", "vllm", "sglang", "ollama", "raw"):
        engine = await engines(fake.base_url, dialect=dialect, chat_template=CHATML_TEMPLATE)
        assert await engine.count_text("abc") is None
        assert await engine.count_tokens(request()) is None
    assert fake.requests == []


@pytest.mark.asyncio
async def test_images_are_not_counted(fake: FakeOpenAIUpstream, engines: Engines) -> None:
    engine = await engines(fake.base_url, dialect="llamacpp_server")
    req = ChatRequest(
        model=CARD.id,
        messages=(Message("user", (TextPart("what?"), ImagePart("data:image/png;base64,AA"))),),
    )
    assert await engine.count_tokens(req) is None
    assert fake.requests == []


# --------------------------------------------------------------------------- tokenizer.json


def test_the_written_tokenizer_json_is_qwen3s_tokenizer(hf: tokenizers.Tokenizer) -> None:
    # The helper's file encodes as tiktoken over the same ranks: a real Qwen3 tokenizer.json.
    for text in ("Hello world", "北京 123456", "e\u0301 <think>x</think>", "  it's\n\n  ok"):
        assert hf.encode(text, add_special_tokens=False).ids == qwen3().encode(text)


@pytest.mark.asyncio
async def test_tokenizer_json_counts_text_as_the_tokenizer_does(
    fake: FakeOpenAIUpstream,
    engines: Engines,
    tokenizer_dir: Path,
    hf: tokenizers.Tokenizer,
) -> None:
    engine = await engines(
        fake.base_url, dialect="llamacpp_server", tokenizer=str(tokenizer_dir / "tokenizer.json")
    )
    for text in ("Paris.", "<think>\nhm\n</think>\n\nA <|im_end|>", "数学 ∑ x²", ""):
        assert await engine.count_text(text) == hf_count(hf, text)
        assert await engine.count_text(text, local_only=True) == hf_count(hf, text)
    assert fake.requests == []  # in-process: the engine's endpoint is not needed


@pytest.mark.asyncio
async def test_tokenizer_json_with_a_configured_template_counts_the_rendered_prompt(
    fake: FakeOpenAIUpstream,
    engines: Engines,
    tokenizer_dir: Path,
    hf: tokenizers.Tokenizer,
) -> None:
    source = TEMPLATE_PATH.read_text(encoding="utf-8")
    engine = await engines(
        fake.base_url,
        dialect="vllm",
        tokenizer=str(tokenizer_dir / "tokenizer.json"),
        chat_template=str(TEMPLATE_PATH),
    )
    for req in (request(), conversation()):
        rendered = ChatTemplate(source, bos_token="", eos_token="<|im_end|>").render(req)
        expected = hf_count(hf, rendered)
        assert await engine.count_tokens(req, local_only=True) == expected
        # Independently: Qwen3's template rendered in Python, counted by tiktoken.
        tools = [openai_tool(tool, with_strict=False) for tool in req.tools] or None
        python = render_prompt(openai_messages(req.messages, for_template=True), tools)
        assert expected == qwen3().count(python)
    assert fake.requests == []


@pytest.mark.asyncio
async def test_tokenizer_json_takes_the_template_and_tokens_beside_it(
    fake: FakeOpenAIUpstream,
    engines: Engines,
    tokenizer_dir: Path,
    hf: tokenizers.Tokenizer,
) -> None:
    # No chat_template setting: tokenizer_config.json's, rendered with enable_thinking as the
    # upstream receives it in chat_template_kwargs.
    engine = await engines(
        fake.base_url, dialect="vllm", tokenizer=str(tokenizer_dir / "tokenizer.json")
    )
    source = TEMPLATE_PATH.read_text(encoding="utf-8")
    template = ChatTemplate(source, bos_token="", eos_token="<|im_end|>")
    req = request(chat_template_kwargs={"enable_thinking": False})
    rendered = template.render(req)
    assert rendered.endswith("<think>\n\n</think>\n\n")
    assert await engine.count_tokens(req) == hf_count(hf, rendered)


@pytest.mark.asyncio
async def test_an_inline_template_wins_over_the_one_beside_the_tokenizer(
    fake: FakeOpenAIUpstream,
    engines: Engines,
    tokenizer_dir: Path,
    hf: tokenizers.Tokenizer,
) -> None:
    engine = await engines(
        fake.base_url,
        tokenizer=str(tokenizer_dir / "tokenizer.json"),
        chat_template=CHATML_TEMPLATE,
    )
    prompt = chatml([{"role": "user", "content": "What is the capital of France?"}])
    assert await engine.count_tokens(request()) == hf_count(hf, prompt)


@pytest.mark.asyncio
async def test_tokenizer_json_without_any_template_falls_back_to_the_engine(
    engines: Engines, tokenizer_dir: Path, tmp_path: Path, hf: tokenizers.Tokenizer
) -> None:
    alone = tmp_path / "tokenizer.json"
    alone.write_bytes((tokenizer_dir / "tokenizer.json").read_bytes())
    async with FakeOpenAIUpstream() as fake:
        engine = await engines(fake.base_url, dialect="llamacpp_server", tokenizer=str(alone))
        assert await engine.count_tokens(request(), local_only=True) is None
        prompt = chatml([{"role": "user", "content": "What is the capital of France?"}])
        assert await engine.count_tokens(request()) == hf_count(hf, prompt)
        assert [p for p, _ in tokenizer_requests(fake)] == ["/apply-template", "/tokenize"]
        assert await engine.count_text("abc") == hf_count(hf, "abc")
        assert len(tokenizer_requests(fake)) == 2


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"tokenizer": "/no/such/tokenizer.json"}, "tokenizer: no such file"),
        ({"chat_template": "/no/such/template.jinja"}, "chat_template: cannot read"),
        ({"chat_template": "{% for x in %}"}, "does not compile"),
    ],
)
@pytest.mark.asyncio
async def test_a_tokenizer_or_template_that_cannot_be_read_stops_start_up(
    engines: Engines, setting: dict[str, str], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigError, match=message):
        await engines("http://127.0.0.1:9/v1", **setting)
    # Used without start(), counting reports it once and estimates.
    engine = await engines("http://127.0.0.1:9/v1", start=False, **setting)
    with caplog.at_level(logging.WARNING):
        assert await engine.count_text("x", local_only=True) is None
        assert await engine.count_text("y", local_only=True) is None
    assert len([r for r in caplog.records if message.split(":")[0] in r.getMessage()]) == 1


@pytest.mark.asyncio
async def test_a_file_that_is_not_a_tokenizer_is_a_configuration_error(
    engines: Engines, tmp_path: Path
) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"not": "a tokenizer"}', encoding="utf-8")
    with pytest.raises(ConfigError, match="not a Hugging Face tokenizer.json"):
        await engines("http://127.0.0.1:9/v1", tokenizer=str(bad))


@pytest.mark.asyncio
async def test_the_tokenizer_loads_lazily_when_the_backend_was_not_started(
    fake: FakeOpenAIUpstream, engines: Engines, tokenizer_dir: Path, hf: tokenizers.Tokenizer
) -> None:
    engine = await engines(
        fake.base_url, start=False, tokenizer=str(tokenizer_dir / "tokenizer.json")
    )
    assert await engine.count_text("lazy", local_only=True) == hf_count(hf, "lazy")


# --------------------------------------------------------------------------- Qwen3 first


@pytest.mark.asyncio
async def test_qwen3_models_count_in_process_before_any_other_source(
    fake: FakeOpenAIUpstream, engines: Engines
) -> None:
    engine = await engines(fake.base_url, card=QWEN3_CARD, dialect="llamacpp_server")
    req = ChatRequest(
        model=QWEN3_CARD.id,
        messages=(Message("user", (TextPart("hi"),)),),
        reasoning=Reasoning(enabled=False),
    )
    prompt = render_prompt(
        openai_messages(req.messages, for_template=True), None, enable_thinking=False
    )
    assert await engine.count_tokens(req, local_only=True) == qwen3().count(prompt)
    assert await engine.count_text("<think>x</think>") == qwen3().count("<think>x</think>")
    assert fake.requests == []


# --------------------------------------------------------------------------- off the loop


@pytest.mark.asyncio
async def test_short_texts_count_inline_and_long_ones_in_a_thread(
    fake: FakeOpenAIUpstream,
    engines: Engines,
    tokenizer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threaded: list[int] = []
    real = asyncio.to_thread

    async def to_thread(function: Callable[..., T], *args: Any) -> T:
        threaded.append(len(args[0]) if args and isinstance(args[0], str) else -1)
        return await real(function, *args)

    for card, config in (
        (CARD, {"tokenizer": str(tokenizer_dir / "tokenizer.json")}),  # tokenizers
        (QWEN3_CARD, {}),  # tiktoken
    ):
        engine = await engines(fake.base_url, card=card, **config)
        monkeypatch.setattr(upstream_tokens.asyncio, "to_thread", to_thread)
        short = "x" * (upstream_tokens.INLINE_CHARS - 1)
        long = "y " * upstream_tokens.INLINE_CHARS
        await engine.count_text(short)
        assert threaded == []
        await engine.count_text(long)
        assert threaded == [len(long)]
        threaded.clear()
        monkeypatch.undo()


# --------------------------------------------------------------------------- usage events


@pytest.mark.asyncio
async def test_a_stream_without_usage_has_no_usage_event_and_the_backend_counts_it(
    engines: Engines,
) -> None:
    # llama-cpp-python ignores stream_options: its streams end without usage. The metering
    # stage then asks the backend to count the prompt and the relayed text.
    async with FakeOpenAIUpstream() as fake:
        fake.enqueue(Script(text=["The capital ", "is Paris."], send_usage=False))
        engine = await engines(
            fake.base_url, dialect="llama_cpp_python", chat_template=CHATML_TEMPLATE
        )
        req = request()
        events = [e async for e in engine.stream(req, CallContext("r", CARD))]
        assert not [e for e in events if type(e).__name__ == "Usage"]
        completion = await collect(_replay(events))
        prompt = chatml([{"role": "user", "content": "What is the capital of France?"}])
        assert await engine.count_tokens(req) == qwen3().count(prompt)
        assert await engine.count_text(completion.text) == qwen3().count("The capital is Paris.")


async def _replay(events: list[Any]) -> AsyncIterator[Any]:
    for event in events:
        yield event

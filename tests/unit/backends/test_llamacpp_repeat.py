"""The same request gives the same text, whatever an instance's KV cache held before and
whichever instance serves it: greedy, and seeded sampling (issue 17).

ggml computes a token's keys and values differently when it is evaluated alone (as every
generated token is) than in a batch; reusing them used to flip greedy choices on the next
turn of a conversation. The engine now reuses whole prompt chunks only (worker.py,
`_evaluate_prompt`). On the real SmolLM2 model."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from tests.unit.backends.test_llamacpp import MODEL, card, complete

from modelport.backends.llamacpp import LlamaCppEngine
from modelport.backends.llamacpp.worker import EVAL_CHUNK
from modelport.core.catalog import LlamaCppBackend
from modelport.core.types import ChatRequest, Message, Sampling, TextPart

pytestmark = pytest.mark.engine

STORY = [("user", "Write a short story about a lighthouse keeper.")]


def chat(turns: list[tuple[str, str]], max_tokens: int = 48, **sampling: object) -> ChatRequest:
    return ChatRequest(
        model="test/smollm2",
        messages=tuple(Message(role, (TextPart(text),)) for role, text in turns),  # type: ignore[arg-type]
        sampling=Sampling(**sampling),  # type: ignore[arg-type]
        max_output_tokens=max_tokens,
    )


@contextlib.asynccontextmanager
async def engine_of(instances: int = 1) -> AsyncIterator[LlamaCppEngine]:
    engine = LlamaCppEngine(
        LlamaCppBackend(path=MODEL, instances=instances), card(4096), default_threads=1
    )
    await engine.start()
    try:
        yield engine
    finally:
        await engine.aclose()


async def next_turn(engine: LlamaCppEngine) -> list[tuple[str, str]]:
    """A conversation's second turn whose first answer is what the model wrote: the instance
    that wrote it holds that answer in its cache, evaluated token by token."""
    answer = (await complete(engine, chat(STORY, max_tokens=160, temperature=0))).text
    return [*STORY, ("assistant", answer), ("user", "I love this story! Thank you.")]


@pytest.mark.asyncio
async def test_a_conversations_next_turn_is_the_same_warm_cold_and_elsewhere() -> None:
    async with engine_of() as first, engine_of() as second:
        turns = await next_turn(first)
        greedy = chat(turns, temperature=0)
        warm = await complete(first, greedy)  # the answer's tokens in the cache
        await complete(first, chat([("user", "What is 2 + 2?")], temperature=0))
        cold = await complete(first, greedy)  # the cache holds another conversation
        again = await complete(first, greedy)  # the cache holds this very request
        elsewhere = await complete(second, greedy)  # a fresh instance
    texts = {warm.text, cold.text, again.text, elsewhere.text}
    assert len(texts) == 1, texts
    assert len(warm.text) > 40
    # Whole chunks of the earlier prompt come from the cache; the answer is read again. The
    # same prompt again comes from the cache whole (with its last token's logits, kept).
    assert warm.usage.cached_tokens % EVAL_CHUNK == 0
    assert cold.usage.cached_tokens < EVAL_CHUNK
    assert again.usage.cached_tokens == again.usage.prompt_tokens


@pytest.mark.asyncio
async def test_a_b_a_a_gives_one_text_with_a_seed_and_when_greedy() -> None:
    async with engine_of(instances=2) as engine:
        turns = await next_turn(engine)
        for sampling in ({"temperature": 0}, {"temperature": 0.9, "seed": 11}):
            a, b = chat(turns, **sampling), chat(STORY, **sampling)
            texts = [(await complete(engine, request)).text for request in (a, b, a, a)]
            assert texts[0] == texts[2] == texts[3], (sampling, texts)
            assert texts[1] != texts[0]

"""Each sampler's effect on real SmolLM2-135M output, deterministic through fixed seeds.

Temperature 0, seeds, stop strings, banning with logit_bias and max_tokens are covered in
test_llamacpp.py. Here each truncation sampler is checked against the model's own first-token
distribution (read through logprobs, which report the raw distribution), and each penalty
against the repetition it is meant to curb. Every test also shows that, without the setting,
the same seeds give output the assertion would reject: none can pass by doing nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import llama_cpp
import pytest
from tests.unit.backends.test_llamacpp import (
    EOS,
    MODEL,
    card,
    complete,
    request,
    running,
    with_logprobs,
)

from modelport.backends.llamacpp import LlamaCppEngine
from modelport.backends.llamacpp.model_file import resolve_model_path
from modelport.core.catalog import LlamaCppBackend
from modelport.core.types import ChatRequest

pytestmark = pytest.mark.engine

STORY = "Write a short story about a cat."  # an open prompt: many plausible first words
SEEDS = range(12)


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    with running(LlamaCppEngine(LlamaCppBackend(path=MODEL), card(), default_threads=1)) as e:
        yield e


@pytest.fixture(scope="module")
def vocab() -> Iterator[llama_cpp.Llama]:
    llm = llama_cpp.Llama(str(resolve_model_path(MODEL)), vocab_only=True, verbose=False)
    yield llm
    llm.close()


async def text_of(engine: LlamaCppEngine, req: ChatRequest) -> str:
    return (await complete(engine, req)).text or ""


async def first_token(engine: LlamaCppEngine, **sampling: object) -> str:
    done = await complete(engine, with_logprobs(request(STORY, max_tokens=1, **sampling), 0))
    assert done.logprobs
    return done.logprobs[0].token


async def first_token_distribution(engine: LlamaCppEngine) -> list[tuple[str, float]]:
    """The 20 likeliest first tokens and their probabilities, most likely first."""
    done = await complete(engine, with_logprobs(request(STORY, max_tokens=1, temperature=0), 20))
    assert done.logprobs
    return [(token, math.exp(logprob)) for token, logprob, _ in done.logprobs[0].top]


Distribution = list[tuple[str, float]]


def kept_by_top_k(dist: Distribution) -> set[str]:
    return {token for token, _ in dist[:2]}


def kept_by_top_p(dist: Distribution) -> set[str]:
    kept, mass = set(), 0.0
    for token, p in dist:
        kept.add(token)
        mass += p
        if mass >= 0.5:
            return kept
    raise AssertionError("the 20 likeliest tokens hold less than half the mass")


def kept_by_min_p(dist: Distribution) -> set[str]:
    return {token for token, p in dist if p >= 0.5 * dist[0][1]}


def kept_by_top_a(dist: Distribution) -> set[str]:
    return {token for token, p in dist if p >= 1.0 * dist[0][1] ** 2}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("sampling", "kept"),
    [
        ({"top_k": 2}, kept_by_top_k),
        ({"top_p": 0.5}, kept_by_top_p),
        ({"min_p": 0.5}, kept_by_min_p),
        ({"top_a": 1.0}, kept_by_top_a),
    ],
    ids=["top_k", "top_p", "min_p", "top_a"],
)
async def test_truncation_keeps_only_the_tokens_it_should(
    engine: LlamaCppEngine,
    sampling: dict[str, object],
    kept: Callable[[Distribution], set[str]],
) -> None:
    allowed = kept(await first_token_distribution(engine))
    plain = [await first_token(engine, temperature=1.0, seed=s) for s in SEEDS]
    truncated = [await first_token(engine, temperature=1.0, seed=s, **sampling) for s in SEEDS]
    # Unrestricted, these seeds draw tokens outside the kept set; truncated, they never do,
    # yet it is still sampling (more than one token), not greedy decoding.
    assert not set(plain) <= allowed
    assert set(truncated) <= allowed
    assert len(set(truncated)) > 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "sampling", [{"top_k": 1}, {"top_p": 0.0001}, {"min_p": 1.0}], ids=["top_k", "top_p", "min_p"]
)
async def test_extreme_truncation_is_greedy(
    engine: LlamaCppEngine, sampling: dict[str, object]
) -> None:
    greedy = await text_of(engine, request(STORY, temperature=0))
    seeds = (1, 2, 3)
    plain = [await text_of(engine, request(STORY, temperature=1.0, seed=s)) for s in seeds]
    truncated = [
        await text_of(engine, request(STORY, temperature=1.0, seed=s, **sampling)) for s in seeds
    ]
    assert any(text != greedy for text in plain)
    assert truncated == [greedy] * len(seeds)


async def mean_logprob(engine: LlamaCppEngine, temperature: float, seed: int) -> float:
    req = request(STORY, temperature=temperature, seed=seed, logit_bias={EOS: -100})
    done = await complete(engine, with_logprobs(req, 0))
    entries = done.logprobs or ()
    assert len(entries) == 8
    return sum(entry.logprob for entry in entries) / len(entries)


@pytest.mark.asyncio
async def test_higher_temperature_picks_less_likely_tokens(engine: LlamaCppEngine) -> None:
    greedy = await text_of(engine, request(STORY, temperature=0))
    for seed in (1, 2, 3):
        hot = await text_of(engine, request(STORY, temperature=2.0, seed=seed))
        assert hot != greedy
        # Under the model's own distribution, hotter output is less likely per token.
        cool, warm, boiling = [await mean_logprob(engine, t, seed) for t in (0.3, 1.0, 2.0)]
        assert cool > warm > boiling


REPEAT = "Write 'apple, apple, apple, apple, apple' and continue the list."


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "penalty",
    [{"frequency_penalty": 2.0}, {"presence_penalty": 2.0}, {"repetition_penalty": 1.8}],
    ids=["frequency", "presence", "repetition"],
)
async def test_penalties_curb_repetition(
    engine: LlamaCppEngine, penalty: dict[str, object]
) -> None:
    def apples(text: str) -> int:
        return text.lower().count("apple")

    base = {"max_tokens": 16, "temperature": 0, "logit_bias": {EOS: -100}}
    plain = await text_of(engine, request(REPEAT, **base))
    penalized = await text_of(engine, request(REPEAT, **base, **penalty))
    assert apples(plain) >= 5
    assert apples(penalized) < apples(plain)


@pytest.mark.asyncio
async def test_logit_bias_raises_a_token(engine: LlamaCppEngine, vocab: llama_cpp.Llama) -> None:
    dist = await first_token_distribution(engine)
    (runner_up,) = vocab.tokenize(dist[1][0].encode(), add_bos=False, special=False)
    unlikely = vocab.tokenize(b"Z", add_bos=False, special=False)[0]
    assert "Z" not in {token for token, _ in dist}
    # A small bias is enough to put the second likeliest token first.
    assert await first_token(engine, temperature=0) == dist[0][0]
    assert await first_token(engine, temperature=0, logit_bias={runner_up: 2.0}) == dist[1][0]
    # +100 forces a token the model would not consider, at every position, even when sampling.
    forced = request(STORY, max_tokens=4, temperature=1.0, seed=3, logit_bias={unlikely: 100})
    assert await text_of(engine, forced) == "ZZZZ"

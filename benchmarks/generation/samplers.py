"""What each optional sampling step costs per token on the local engine.

`python -m benchmarks.generation.samplers [--rounds N] [--tokens N]` (or `make bench-samplers`)
runs one engine instance in-process (no HTTP: the point is the engine's own per-token work)
and generates with a plain sampler (temperature 1) and with each extra step: top_a (a numpy
logits processor on the full vocabulary), logit_bias (the same route, touching a few ids),
logprobs with 5 alternatives (read from the last logits row), and a json_object grammar.
Variants alternate within each round, so drift on a shared machine hits them alike; the
report gives the median milliseconds per token and the difference to the plain sampler.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable

from msgspec.structs import replace

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before llama_cpp loads (docs/engine.md)

from benchmarks.generation.params import MODEL_PATH, PROMPT
from modelport.backends.base import CallContext
from modelport.backends.llamacpp import LlamaCppEngine
from modelport.core.catalog import LlamaCppBackend, ModelCard
from modelport.core.events import TextDelta, Usage
from modelport.core.types import (
    ChatRequest,
    Message,
    ResponseFormat,
    Sampling,
    TextPart,
)

EOS = 2  # SmolLM2's <|im_end|>, banned so that every answer has the same length

Variant = Callable[[ChatRequest], ChatRequest]
VARIANTS: dict[str, Variant] = {
    "plain (temperature 1)": lambda r: r,
    "top_a 0.2": lambda r: replace(r, sampling=replace(r.sampling, top_a=0.2)),
    "logit_bias, 3 ids": lambda r: replace(
        r, sampling=replace(r.sampling, logit_bias={EOS: -100.0, 198: 2.0, 30: -1.0})
    ),
    "logprobs, top 5": lambda r: replace(r, logprobs=True, top_logprobs=5),
    "json_object grammar": lambda r: replace(r, response_format=ResponseFormat("json_object")),
}


def base_request(tokens: int, seed: int) -> ChatRequest:
    return ChatRequest(
        model="bench/smollm2",
        messages=(Message("user", (TextPart(PROMPT),)),),
        sampling=Sampling(temperature=1.0, seed=seed, logit_bias={EOS: -100.0}),
        max_output_tokens=tokens,
    )


async def ms_per_token(engine: LlamaCppEngine, request: ChatRequest) -> float:
    """Milliseconds per token between the first and the last text token."""
    first = last = 0.0
    texts = 0
    completion = 0
    ctx = CallContext("bench", engine.card)
    async for event in engine.stream(request, ctx):
        if isinstance(event, TextDelta):
            last = time.perf_counter()
            first = first or last
            texts += 1
        elif isinstance(event, Usage):
            completion = event.completion_tokens
    if texts < 2 or completion < 2:
        raise RuntimeError("the answer was too short to time")
    return (last - first) * 1000 / (completion - 1)


async def measure(rounds: int, tokens: int) -> dict[str, list[float]]:
    card = ModelCard(id="bench/smollm2", name="SmolLM2", description="", context_length=2048)
    engine = LlamaCppEngine(LlamaCppBackend(path=MODEL_PATH), card, default_threads=1)
    await engine.start()
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        for round_ in range(rounds):
            # Rotate the order each round, so no variant always runs first (after a pause).
            names = list(VARIANTS)
            names = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in names:
                request = VARIANTS[name](base_request(tokens, seed=round_))
                results[name].append(await ms_per_token(engine, request))
    finally:
        await engine.aclose()
    return results


def report(results: dict[str, list[float]]) -> str:
    plain = statistics.median(results["plain (temperature 1)"])
    lines = [f"{'sampler':<24}{'ms/token':>10}{'extra ms':>10}{'× plain':>9}"]
    for name, values in results.items():
        median = statistics.median(values)
        lines.append(f"{name:<24}{median:>10.2f}{median - plain:>+10.2f}{median / plain:>9.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args(argv)
    results = asyncio.run(measure(args.rounds, args.tokens))
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

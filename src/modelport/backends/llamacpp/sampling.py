"""Mapping a request's sampling settings onto llama.cpp's sampler.

`plan_sampling` validates the canonical settings and fixes everything per request (the seed
included) in a `SamplingPlan`; `logits_processors` builds the numpy steps llama.cpp lacks
(sparse logit bias, top-a), which run first in llama.cpp's chain, on the full vocabulary.
Unset values are neutral (temperature 1, no truncation, no penalty), as in the OpenAI API.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from modelport.backends.llamacpp.output_grammar import OutputGrammar
from modelport.core.errors import InvalidRequest
from modelport.core.types import ChatRequest, Sampling

# llama.cpp reads the seed 0xFFFFFFFF as "pick one at random", so seeds stay below it.
_SEED_RANGE = 0xFFFFFFFF
# A bias at or below this bans the token outright (adding -100 to a large logit may not).
_BAN = -100.0

Logits = npt.NDArray[np.float32]
LogitsProcessor = Callable[[npt.NDArray[np.intc], Logits], Logits]


@dataclass(frozen=True)
class SamplingPlan:
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    frequency_penalty: float
    presence_penalty: float
    seed: int
    stop: tuple[str, ...] = ()
    logit_bias: dict[int, float] = field(default_factory=dict)
    top_a: float | None = None
    grammar: str | None = None  # GBNF text, from the first token
    resume_grammar: str | None = None  # GBNF text, after the engine closed a think block
    grammar_param: str = "response_format"  # the request field the grammar comes from

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `Llama.generate` (typical-p is not in the API: disabled)."""
        return {
            "temp": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "typical_p": 1.0,
            "repeat_penalty": self.repeat_penalty,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
        }


def plan_sampling(
    request: ChatRequest, *, n_vocab: int, grammar: OutputGrammar | None = None
) -> SamplingPlan:
    """Validate `request`'s sampling settings; `InvalidRequest` names the offending field.
    `grammar`: what the output must look like (`output_grammar.output_grammar`)."""
    s = request.sampling
    _check_ranges(s)
    bias = dict(s.logit_bias or {})
    for token_id in bias:
        if not 0 <= token_id < n_vocab:
            raise InvalidRequest(
                f"logit_bias: token id {token_id} is outside this model's vocabulary "
                f"(0..{n_vocab - 1})",
                param="logit_bias",
            )
    seed = secrets.randbelow(_SEED_RANGE) if s.seed is None else s.seed % _SEED_RANGE
    return SamplingPlan(
        temperature=1.0 if s.temperature is None else s.temperature,
        top_p=1.0 if s.top_p is None else s.top_p,
        top_k=s.top_k or 0,  # llama.cpp reads k <= 0 as "no top-k"
        min_p=s.min_p or 0.0,
        repeat_penalty=1.0 if s.repetition_penalty is None else s.repetition_penalty,
        frequency_penalty=s.frequency_penalty or 0.0,
        presence_penalty=s.presence_penalty or 0.0,
        seed=seed,
        stop=s.stop,
        logit_bias=bias,
        top_a=s.top_a or None,
        grammar=grammar.first if grammar else None,
        resume_grammar=grammar.after_think if grammar else None,
        grammar_param=grammar.param if grammar else "response_format",
    )


def _check_ranges(s: Sampling) -> None:
    checks: list[tuple[str, float | None, float, float]] = [
        ("temperature", s.temperature, 0.0, float("inf")),
        ("top_p", s.top_p, 0.0, 1.0),
        ("min_p", s.min_p, 0.0, 1.0),
        ("top_a", s.top_a, 0.0, 1.0),
        ("frequency_penalty", s.frequency_penalty, -2.0, 2.0),
        ("presence_penalty", s.presence_penalty, -2.0, 2.0),
        ("repetition_penalty", s.repetition_penalty, 0.0, float("inf")),
    ]
    for name, value, low, high in checks:
        if value is not None and not low <= value <= high:
            raise InvalidRequest(f"{name} must be between {low} and {high}", param=name)
    if s.top_k is not None and s.top_k < 0:
        raise InvalidRequest("top_k must be >= 0 (0 disables it)", param="top_k")
    if s.repetition_penalty is not None and s.repetition_penalty == 0:
        raise InvalidRequest("repetition_penalty must be > 0", param="repetition_penalty")


def logits_processors(plan: SamplingPlan) -> list[LogitsProcessor]:
    processors: list[LogitsProcessor] = []
    if plan.logit_bias:
        processors.append(_logit_bias(plan.logit_bias))
    if plan.top_a is not None:
        processors.append(_top_a(plan.top_a))
    return processors


def _logit_bias(bias: dict[int, float]) -> LogitsProcessor:
    ids = np.fromiter(bias.keys(), dtype=np.intp, count=len(bias))
    values = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
    banned = values <= _BAN

    def apply(_input_ids: npt.NDArray[np.intc], scores: Logits) -> Logits:
        # Touches only the biased ids: no vocabulary-sized copy per token.
        updated = scores[ids] + values
        updated[banned] = -np.inf
        scores[ids] = updated
        return scores

    return apply


def _top_a(a: float) -> LogitsProcessor:
    def apply(_input_ids: npt.NDArray[np.intc], scores: Logits) -> Logits:
        shifted = np.exp(scores - scores.max())
        probs = shifted / shifted.sum()
        scores[probs < a * float(probs.max()) ** 2] = -np.inf
        return scores

    return apply

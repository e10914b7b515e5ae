"""How many tokens a request may spend thinking: the one rule every backend enforces.

OpenRouter-style: `reasoning.max_tokens` sets the budget directly; an effort sets it to a
share of the output limit (xhigh 0.95, high 0.8, medium 0.5, low 0.2, minimal 0.1), clamped
to [1024, 128000] as OpenRouter does. Our addition: the budget never reaches the output limit
itself, so the answer after the thinking always gets at least one token. The output limit is
the request's max_tokens, else the card's max_output_tokens, else 32768 (Qwen3's suggested
output length for thinking). No effort and no max_tokens: no budget (the model thinks as long
as it likes, within max_tokens). A model that does not think gets no budget.
"""

from __future__ import annotations

from modelport.core.catalog import ModelCard
from modelport.core.types import ChatRequest

EFFORT_RATIOS = {"xhigh": 0.95, "high": 0.8, "medium": 0.5, "low": 0.2, "minimal": 0.1}
MIN_BUDGET = 1024
MAX_BUDGET = 128_000
DEFAULT_OUTPUT_LIMIT = 32_768


def thinking_budget(card: ModelCard, request: ChatRequest) -> int | None:
    """The thinking budget in tokens for `request` on `card`, or None for no limit."""
    reasoning = request.reasoning
    if not card.thinks(reasoning):
        return None
    limit = request.max_output_tokens or card.max_output_tokens or DEFAULT_OUTPUT_LIMIT
    if reasoning.max_tokens is not None:
        budget = reasoning.max_tokens
    elif reasoning.effort in EFFORT_RATIOS:
        share = int(EFFORT_RATIOS[reasoning.effort] * limit)
        budget = min(max(share, MIN_BUDGET), MAX_BUDGET)
    else:
        return None
    return max(0, min(budget, limit - 1))

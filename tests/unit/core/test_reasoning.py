"""The thinking budget rule (core/reasoning.py)."""

from __future__ import annotations

import msgspec
import pytest

from modelport.core.catalog import ModelCard, ThinkingMode
from modelport.core.reasoning import thinking_budget
from modelport.core.types import ChatRequest, Effort, Message, Reasoning, TextPart


def card(thinking: ThinkingMode = "hybrid", max_output: int | None = None) -> ModelCard:
    return ModelCard(
        id="m",
        name="m",
        description="",
        context_length=131072,
        thinking=thinking,
        max_output_tokens=max_output,
    )


def request(limit: int | None = None, **reasoning: object) -> ChatRequest:
    """A request with max_tokens `limit` and the given reasoning settings."""
    return ChatRequest(
        model="m",
        messages=(Message("user", (TextPart("hi"),)),),
        max_output_tokens=limit,
        reasoning=Reasoning(**reasoning),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("effort", "budget"),
    [("xhigh", 9500), ("high", 8000), ("medium", 5000), ("low", 2000), ("minimal", 1024)],
)
def test_effort_is_a_share_of_max_tokens_clamped_to_1024(effort: Effort, budget: int) -> None:
    # minimal: 0.1 x 10000 = 1000, raised to OpenRouter's floor of 1024.
    assert thinking_budget(card(), request(10_000, effort=effort)) == budget


def test_explicit_budget_wins_and_the_answer_keeps_a_token() -> None:
    assert thinking_budget(card(), request(10_000, effort="high", max_tokens=300)) == 300
    assert thinking_budget(card(), request(500, effort="low")) == 499  # 1024 > max_tokens
    assert thinking_budget(card(), request(500, max_tokens=2000)) == 499
    assert thinking_budget(card(), request(500, max_tokens=0)) == 0


def test_the_output_limit_falls_back_to_the_card_then_32768() -> None:
    assert thinking_budget(card(max_output=4000), request(effort="medium")) == 2000
    assert thinking_budget(card(), request(effort="high")) == 26214
    assert thinking_budget(card(), request(1_000_000, effort="xhigh")) == 128_000


def test_no_budget_without_thinking_or_without_a_setting() -> None:
    assert thinking_budget(card(), request(1000)) is None
    assert thinking_budget(card(), request(1000, effort="none")) is None
    assert thinking_budget(card(), request(1000, enabled=False, max_tokens=50)) is None
    assert thinking_budget(card("none"), request(1000, effort="high")) is None
    assert thinking_budget(card("always"), request(1000, effort="none", max_tokens=50)) == 50


def test_only_hybrid_models_get_a_thinking_switch() -> None:
    hybrid = ModelCard(id="h", name="h", description="", context_length=1, thinking="hybrid")
    off, on = Reasoning(effort="none"), Reasoning(enabled=True)
    assert hybrid.thinking_switch(off) is False
    assert hybrid.thinking_switch(on) is True
    assert hybrid.thinking_switch(Reasoning(effort="high")) is None  # the template's default
    for mode in ("always", "none"):
        card = msgspec.structs.replace(hybrid, thinking=mode)
        assert card.thinking_switch(off) is None
        assert card.thinking_switch(on) is None

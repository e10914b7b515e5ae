"""verbosity as an instruction to the model (core/verbosity.py)."""

from __future__ import annotations

from modelport.core.types import ChatRequest, Message, TextPart
from modelport.core.verbosity import INSTRUCTIONS, apply_verbosity


def request(*messages: Message, verbosity: str | None) -> ChatRequest:
    return ChatRequest(model="m", messages=messages, verbosity=verbosity)  # type: ignore[arg-type]


def test_low_and_high_add_an_instruction_to_the_system_message() -> None:
    system = Message("system", (TextPart("You are a pirate."),))
    question = Message("user", (TextPart("Why is the sea salty?"),))
    low = apply_verbosity(request(system, question, verbosity="low"))
    assert low.messages[0].parts == (TextPart("You are a pirate.\n\n" + INSTRUCTIONS["low"]),)
    assert low.messages[1:] == (question,)
    high = apply_verbosity(request(question, verbosity="high"))
    assert high.messages == (Message("system", (TextPart(INSTRUCTIONS["high"]),)), question)


def test_medium_and_unset_change_nothing() -> None:
    question = Message("user", (TextPart("hi"),))
    for verbosity in ("medium", None):
        original = request(question, verbosity=verbosity)
        assert apply_verbosity(original) is original

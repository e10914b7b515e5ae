"""ParsedRelay: raw-text events in, parsed events out, finishing and logprobs rules."""

from __future__ import annotations

from modelport.core.events import Logprobs, ReasoningDelta, Stop, TextDelta, Usage
from modelport.core.types import TokenLogprob
from modelport.parsers.qwen3 import Qwen3OutputParser
from modelport.parsers.relay import ParsedRelay

ENTRY = (TokenLogprob("Hi", -0.1),)


def relay(*, keep_logprobs: bool) -> ParsedRelay:
    return ParsedRelay(Qwen3OutputParser(think_mode="open"), keep_logprobs=keep_logprobs)


def test_logprobs_follow_answer_text_only_when_asked_to() -> None:
    kept = relay(keep_logprobs=True)
    assert kept.feed(TextDelta(0, "<think>\nhm\n</think>\n\nHi")) == [
        ReasoningDelta(0, "hm"),
        TextDelta(1, "Hi"),
    ]
    assert kept.feed(Logprobs(0, ENTRY)) == [Logprobs(1, ENTRY)]  # renumbered to the answer
    # Entries that do not directly follow answer text are dropped.
    assert kept.feed(Logprobs(0, ENTRY)) == []
    dropped = relay(keep_logprobs=False)
    dropped.feed(TextDelta(0, "Hi"))
    assert dropped.feed(Logprobs(0, ENTRY)) == []


def test_usage_waits_for_the_parser_to_flush_before_stop() -> None:
    r = relay(keep_logprobs=False)
    assert r.feed(TextDelta(0, "<think>\ncut off")) == [ReasoningDelta(0, "cut off")]
    assert r.feed(Usage(5, 3)) == []
    assert r.feed(Stop("length", "length")) == [Usage(5, 3), Stop("length", "length")]

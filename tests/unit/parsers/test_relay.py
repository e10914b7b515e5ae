"""ParsedRelay: raw-text events in, parsed events out, finishing and logprobs rules."""

from __future__ import annotations

from modelport.core.errors import MalformedModelOutput
from modelport.core.events import (
    Error,
    Logprobs,
    ReasoningDelta,
    Stop,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from modelport.core.types import ChatRequest, TokenLogprob, Tool
from modelport.parsers.qwen3 import Qwen3OutputParser
from modelport.parsers.relay import ParsedRelay, ReasoningCounter

ENTRY = (TokenLogprob("Hi", -0.1),)
WEATHER = Tool(
    name="get_weather",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)
SCHEMAS = {"get_weather": WEATHER.parameters}


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


CUT_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"ci'


def tool_relay(request: ChatRequest) -> ParsedRelay:
    parser = Qwen3OutputParser(
        think_mode="off",
        content_parser="json",
        tool_names={"get_weather"},
        schemas=SCHEMAS,
    )
    return ParsedRelay(parser, request)


def test_a_call_cut_by_max_tokens_ends_with_length_not_an_error() -> None:
    request = ChatRequest(model="m", messages=(), tools=(WEATHER,))
    r = tool_relay(request)
    started = r.feed(TextDelta(0, CUT_CALL))
    assert [type(event) for event in started] == [ToolCallStart, ToolCallDelta]
    assert r.feed(Stop("length", "length")) == [Stop("length", "length")]


def test_a_turn_that_ends_inside_a_call_is_an_error() -> None:
    request = ChatRequest(model="m", messages=(), tools=(WEATHER,))
    r = tool_relay(request)
    r.feed(TextDelta(0, CUT_CALL))
    (error,) = r.feed(Stop("stop", "eos"))
    assert isinstance(error, Error)
    assert isinstance(error.error, MalformedModelOutput)
    assert "unclosed tool call" in error.error.message


def test_an_upstream_call_cut_by_max_tokens_ends_with_length() -> None:
    # An upstream's own tool parser streamed the call; its arguments stop midway.
    request = ChatRequest(model="m", messages=(), tools=(WEATHER,))
    for finish, errors in (("length", False), ("stop", True)):
        r = ParsedRelay(Qwen3OutputParser(think_mode="off", schemas=SCHEMAS), request)
        r.feed(ToolCallStart(0, "call_1", "get_weather"))
        r.feed(ToolCallDelta(0, '{"city": "Par'))
        (last,) = r.feed(Stop(finish, finish))
        assert isinstance(last, Error) == errors
    # A complete call whose arguments break the schema is an error even when cut off.
    r = ParsedRelay(Qwen3OutputParser(think_mode="off", schemas=SCHEMAS), request)
    r.feed(ToolCallStart(0, "call_1", "get_weather"))
    r.feed(ToolCallDelta(0, '{"city": 7}'))
    (last,) = r.feed(Stop("length", "length"))
    assert isinstance(last, Error)


def characters(text: str) -> int:
    return len(text)  # a stand-in tokenizer: one token per character


def test_reasoning_tokens_counted_from_the_raw_think_block() -> None:
    counter = ReasoningCounter(characters, preopened=False)
    counter.raw("  <think>\nab")
    counter.raw("c\n</think>\n\nanswer")
    assert counter.usage(Usage(5, 100)).reasoning_tokens == len("<think>\nabc\n</think>")
    # An upstream that reported reasoning tokens keeps its own count.
    assert counter.usage(Usage(5, 100, 7)).reasoning_tokens == 7
    # Never more than were generated.
    assert counter.usage(Usage(5, 3)).reasoning_tokens == 3


def test_reasoning_tokens_of_labelled_or_preopened_reasoning() -> None:
    labelled = ReasoningCounter(characters, preopened=False)
    labelled.labelled("\nabc\n")
    assert labelled.usage(Usage(5, 100)).reasoning_tokens == len("<think>\nabc\n</think>")
    preopened = ReasoningCounter(characters, preopened=True)
    preopened.raw("abc\n</think>\n\nanswer")
    assert preopened.usage(Usage(5, 100)).reasoning_tokens == len("abc\n</think>")
    # No think block: an answer straight away counts no reasoning.
    plain = ReasoningCounter(characters, preopened=False)
    plain.raw("Just an answer with <think> inside")
    assert plain.usage(Usage(5, 100)).reasoning_tokens == 0

"""Qwen3OutputParser: raw Qwen3 output to numbered canonical events and a finish summary."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.parsers._streaming import chunks

from modelport.core.events import (
    Event,
    ReasoningDelta,
    Start,
    Stop,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
)
from modelport.core.invariants import check_stream
from modelport.parsers.qwen3 import Qwen3OutputParser, Qwen3Summary
from modelport.parsers.think import ThinkMode

THINK_AND_TWO_CALLS = (
    "<think>\nThe user wants weather in two cities.\n</think>\n\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tōkyō"}}\n</tool_call>'
)


def stream(
    parts: list[str], think_mode: ThinkMode = "open", tools: bool = True, *, cut: bool = False
) -> tuple[list[Event], Qwen3Summary]:
    parser = Qwen3OutputParser(
        think_mode=think_mode, content_parser="json" if tools else None, tool_names={"get_weather"}
    )
    events: list[Event] = []
    for part in parts:
        events += parser.feed(part)
    final, summary = parser.finish(cut=cut)
    return events + final, summary


def without_ids(events: list[Event]) -> list[Event]:
    return [
        ToolCallStart(event.index, "", event.name) if isinstance(event, ToolCallStart) else event
        for event in events
    ]


def test_thinking_then_two_calls_as_one_chunk() -> None:
    events, summary = stream([THINK_AND_TWO_CALLS])
    assert without_ids(events) == [
        ReasoningDelta(0, "The user wants weather in two cities."),
        ToolCallStart(1, "", "get_weather"),
        ToolCallDelta(1, '{"city": "Paris"}'),
        ToolCallStart(2, "", "get_weather"),
        ToolCallDelta(2, '{"city": "Tōkyō"}'),
    ]
    ids = [event.id for event in events if isinstance(event, ToolCallStart)]
    assert all(call_id.startswith("call_") for call_id in ids)
    assert len(set(ids)) == 2
    assert summary == Qwen3Summary(
        saw_tool_calls=True,
        think_closed=True,
        malformed=(),
        called=("get_weather", "get_weather"),
    )
    assert summary.finish_reason("stop") == "tool_calls"


def test_with_parallel_calls_off_only_the_first_call_is_passed_on() -> None:
    parser = Qwen3OutputParser(think_mode="open", max_calls=1)
    events = parser.feed(THINK_AND_TWO_CALLS)
    final, summary = parser.finish()
    assert without_ids(events + final) == [
        ReasoningDelta(0, "The user wants weather in two cities."),
        ToolCallStart(1, "", "get_weather"),
        ToolCallDelta(1, '{"city": "Paris"}'),
    ]
    assert (summary.called, summary.dropped_calls) == (("get_weather",), 1)
    assert summary.finish_reason("stop") == "tool_calls"
    check_stream([Start(model="qwen/qwen3-8b"), *events, Stop(summary.finish_reason("stop"))])


def test_per_character_stream_keeps_the_invariants_and_the_text() -> None:
    events, summary = stream(list(THINK_AND_TWO_CALLS))
    check_stream([Start(model="qwen/qwen3-8b"), *events, Stop(summary.finish_reason("stop"))])
    whole, _ = stream([THINK_AND_TWO_CALLS])
    assert joined(events) == joined(whole)


def test_truncated_thinking_is_reasoning_only_and_length() -> None:
    events, summary = stream(["<think>\nLet me consider", " the options"])
    assert events == [ReasoningDelta(0, "Let me consider"), ReasoningDelta(0, " the options")]
    assert not summary.think_closed
    assert summary.finish_reason("length") == "length"


def test_preopened_2507_output_and_answer() -> None:
    events, summary = stream(["2+2 is 4.\n</think>\n\nThe answer is 4."], "preopened")
    assert events == [ReasoningDelta(0, "2+2 is 4."), TextDelta(1, "The answer is 4.")]
    assert summary.finish_reason("stop") == "stop"


def test_thinking_off_without_tools_is_all_text() -> None:
    text = 'Sure: <tool_call>\n{"name": "x"}\n</tool_call>'
    events, summary = stream([text], "off", tools=False)
    assert events == [TextDelta(0, text)]
    assert summary == Qwen3Summary(saw_tool_calls=False, think_closed=True, malformed=())


def test_a_call_the_output_ends_inside_is_incomplete_when_cut_off_else_malformed() -> None:
    text = (
        '<think>\nok\n</think>\n\nChecking.\n<tool_call>\n{"name": "get_weather", "arguments": {"ci'
    )
    for cut in (True, False):
        events, summary = stream([text], cut=cut)
        assert without_ids(events) == [
            ReasoningDelta(0, "ok"),
            TextDelta(1, "Checking."),
            ToolCallStart(2, "", "get_weather"),
            ToolCallDelta(2, '{"ci'),
        ]
        assert not summary.saw_tool_calls
        if cut:  # max_tokens ended it: incomplete, like a cut answer, not the model's fault
            assert summary.cut_call and not summary.malformed
            assert summary.finish_reason("length") == "length"
        else:  # the model ended its turn inside a call: broken
            assert not summary.cut_call
            assert [bad.reason for bad in summary.malformed] == ["unclosed tool call"]


def test_unknown_tool_opens_no_block() -> None:
    text = 'A <tool_call>\n{"name": "rm", "arguments": {}}\n</tool_call> B'
    events, summary = stream([text])
    assert events == [TextDelta(0, "A"), TextDelta(0, "B")]
    assert [bad.reason for bad in summary.malformed] == ["unknown tool 'rm'"]


def joined(events: list[Event]) -> list[tuple[int, str]]:
    """Each block's kind tag and all its text, in block order."""
    blocks: dict[int, list[str]] = {}
    for event in events:
        if isinstance(event, ReasoningDelta | TextDelta):
            blocks.setdefault(event.index, [type(event).__name__]).append(event.text)
        elif isinstance(event, ToolCallStart):
            blocks.setdefault(event.index, ["call:" + event.name])
        elif isinstance(event, ToolCallDelta):
            blocks[event.index].append(event.arguments)
    return [(index, "|".join([parts[0], "".join(parts[1:])])) for index, parts in blocks.items()]


SEGMENTS = st.sampled_from(
    [
        "<think>\n",
        "</think>\n\n",
        "Hmm.\n",
        "é😀 ",
        "\n",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Nice", "n": [1, {}]}}\n'
        "</tool_call>",
        '<tool_call>\n{"name": "get_weather", "arguments": {"q": "</tool_call>"}}\n</tool_call>',
        "<tool_call>\nbroken\n</tool_call>",
        "<tool_call>\n{",
        "Answer.",
    ]
)


@given(
    st.lists(SEGMENTS, max_size=8).map("".join),
    st.sampled_from(["open", "preopened", "off"]),
    st.lists(st.integers(0, 500), max_size=15),
)
def test_streamed_events_keep_invariants_and_equal_whole(
    text: str, mode: ThinkMode, cuts: list[int]
) -> None:
    events, summary = stream(chunks(text, cuts), mode)
    whole, whole_summary = stream([text], mode)
    check_stream([Start(model="m"), *events, Stop(summary.finish_reason("stop"))])
    assert joined(events) == joined(whole)
    assert summary.malformed == whole_summary.malformed
    if not summary.malformed:  # then every call closed, and its arguments are JSON objects
        calls = [part for _, part in joined(whole) if part.startswith("call:")]
        assert summary.saw_tool_calls == bool(calls)
        for call in calls:
            assert isinstance(json.loads(call.split("|", 1)[1]), dict)


def test_arguments_that_break_the_tool_schema_are_reported() -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city"],
    }
    call = '<tool_call>\n{"name": "get_weather", "arguments": %s}\n</tool_call>'
    good, bad = call % '{"city": "Oslo", "days": 2}', call % '{"days": 0}'
    for text, valid in ((good, True), (bad, False)):
        parser = Qwen3OutputParser(think_mode="off", schemas={"get_weather": schema})
        parser.feed(text)
        _, summary = parser.finish()
        assert summary.saw_tool_calls is valid
        if not valid:
            (problem,) = summary.malformed
            assert "do not match its schema" in problem.reason
            assert "'city' is a required property" in problem.reason
            assert summary.finish_reason("stop") == "stop"

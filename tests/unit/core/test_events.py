"""The event-stream invariants and `collect`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from modelport.core.collect import collect
from modelport.core.errors import UpstreamError
from modelport.core.events import (
    Error,
    Event,
    ReasoningDelta,
    Start,
    Stop,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from modelport.core.invariants import StreamInvariantError, check_stream
from modelport.core.types import ToolCallPart


async def _aiter(events: list[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


GOOD: list[Event] = [
    Start("m", "b"),
    ReasoningDelta(0, "think"),
    ReasoningDelta(0, "ing"),
    TextDelta(1, "Hello"),
    ToolCallStart(2, "call_1", "f"),
    ToolCallDelta(2, '{"a":'),
    ToolCallDelta(2, "1}"),
    ToolCallStart(3, "call_2", "g"),
    Usage(10, 7, 2),
    Stop("tool_calls", "eos"),
]


def test_a_good_stream_passes() -> None:
    check_stream(GOOD)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([], "empty"),
        ([TextDelta(0, "x"), Stop("stop")], "first event"),
        ([Start("m"), TextDelta(0, "x")], "last event"),
        ([Start("m"), Start("m"), Stop("stop")], "second Start"),
        ([Start("m"), Stop("stop"), Stop("stop")], "before the end"),
        ([Start("m"), TextDelta(1, "x"), Stop("stop")], "expected 0"),
        ([Start("m"), TextDelta(0, "x"), ReasoningDelta(0, "y"), Stop("stop")], "changed kind"),
        (
            [Start("m"), TextDelta(0, "x"), TextDelta(1, "y"), TextDelta(0, "z"), Stop("stop")],
            "closed",
        ),
        ([Start("m"), ToolCallDelta(0, "{}"), Stop("stop")], "before ToolCallStart"),
        ([Start("m"), Usage(1, 2), Usage(1, 1), Stop("stop")], "running Usage went down"),
        ([Start("m"), Usage(1, 1, 2), Stop("stop")], "reasoning tokens exceed"),
    ],
)
def test_broken_streams_are_named(events: list[Event], message: str) -> None:
    with pytest.raises(StreamInvariantError, match=message):
        check_stream(events)


def test_collect_folds_every_kind() -> None:
    completion = asyncio.run(collect(_aiter(GOOD)))
    assert completion.text == "Hello"
    assert completion.reasoning == "thinking"
    assert completion.tool_calls == (
        ToolCallPart("call_1", "f", '{"a":1}'),
        ToolCallPart("call_2", "g", ""),
    )
    assert completion.usage == Usage(10, 7, 2)
    assert (completion.finish_reason, completion.native_finish_reason) == ("tool_calls", "eos")
    assert (completion.model, completion.backend) == ("m", "b")


def test_collect_raises_a_final_error() -> None:
    events: list[Event] = [Start("m"), TextDelta(0, "x"), Error(UpstreamError("gone"))]
    with pytest.raises(UpstreamError, match="gone"):
        asyncio.run(collect(_aiter(events)))


def test_collect_of_an_empty_answer() -> None:
    completion = asyncio.run(collect(_aiter([Start("m"), Usage(3, 0), Stop("length")])))
    assert completion.text is None
    assert completion.tool_calls == ()
    assert completion.finish_reason == "length"

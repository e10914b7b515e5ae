"""Fuzzing the Qwen3 output parsers (`parsers/`, docs/fuzzing.md) with text a model could write:
a soup of the tags and JSON/XML fragments the parsers look for, in any order, split anywhere.
Whatever the model writes, the parsers raise nothing (a broken call is a `Malformed` piece,
reported by the caller as a `ModelportError`), the events keep the stream invariants, and
streamed equals whole under any split (the property every parser test states for well-formed
output, here for arbitrary output).
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from hypothesis import given
from hypothesis import strategies as st
from tests.support.fuzz import fuzz_settings

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
from modelport.parsers.base import ContentParser
from modelport.parsers.qwen3 import Qwen3OutputParser, Qwen3Summary
from modelport.parsers.qwen3_coder_xml import Qwen3CoderXmlToolParser, coerce
from modelport.parsers.think import ThinkMode

SCHEMAS: dict[str, dict[str, Any]] = {
    "weather": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "hourly": {"type": "boolean"},
            "where": {"type": "object"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "ratio": {"type": ["number", "null"]},
        },
        "required": ["city"],
    },
    "noop": {"type": "object"},
}

TOKENS = [
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<function=weather>",
    "<function=noop>",
    "<function=",
    "</function>",
    "<parameter=city>",
    "<parameter=days>",
    "<parameter=where>",
    "<parameter=tags>",
    "<parameter=ratio>",
    "<parameter=",
    "</parameter>",
    '{"name": "weather", "arguments": ',
    '{"name": "noop", "arguments": {}}',
    '{"name": "nope", "arguments": {}}',
    '{"city": "Oslo"}',
    '{"days": "x"}',
    "{",
    "}",
    "[",
    "]",
    '"',
    "\\",
    "\n",
    "\n\n",
    " ",
    "<",
    ">",
    "=",
    "null",
    "1e999",
    "-0",
    "true",
    "NaN",
    "Oslo",
    "\x00",
    "💥",
]
model_text = st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), max_size=25).map("".join)
ContentKind = Literal["json", "coder_xml", "none"]


def content_parser(kind: ContentKind) -> ContentParser | Literal["json"] | None:
    if kind == "json":
        return "json"
    if kind == "coder_xml":
        return Qwen3CoderXmlToolParser(SCHEMAS)
    return None


def parse(
    parts: list[str],
    mode: ThinkMode,
    kind: ContentKind,
    *,
    cut: bool,
    max_calls: int | None = None,
) -> tuple[list[Event], Qwen3Summary]:
    parser = Qwen3OutputParser(
        think_mode=mode,
        content_parser=content_parser(kind),
        tool_names=set(SCHEMAS),
        max_calls=max_calls,
        schemas=SCHEMAS,
    )
    events: list[Event] = []
    for part in parts:
        events += parser.feed(part)
    final, summary = parser.finish(cut=cut)
    return events + final, summary


def normalized(events: list[Event]) -> list[Event]:
    """Adjacent deltas of one block joined and call ids blanked: the form in which streamed
    equals whole."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, ToolCallStart):
            event = ToolCallStart(event.index, "", event.name)
        last = out[-1] if out else None
        if (
            isinstance(event, TextDelta | ReasoningDelta | ToolCallDelta)
            and type(last) is type(event)
            and last.index == event.index  # type: ignore[union-attr]
        ):
            if isinstance(event, ToolCallDelta):
                out[-1] = ToolCallDelta(event.index, last.arguments + event.arguments)  # type: ignore[union-attr]
            else:
                out[-1] = type(event)(event.index, last.text + event.text)  # type: ignore[union-attr]
            continue
        out.append(event)
    return out


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({0, len(text), *(cut for cut in cuts if 0 < cut < len(text))})
    return [text[a:b] for a, b in itertools.pairwise(points)]


modes = st.sampled_from(["open", "preopened", "off"])
kinds = st.sampled_from(["json", "coder_xml", "none"])


@fuzz_settings(500)
@given(
    text=model_text,
    cuts=st.lists(st.integers(0, 300), max_size=10),
    mode=modes,
    kind=kinds,
    cut=st.booleans(),
    max_calls=st.sampled_from([None, 1]),
)
def test_any_output_in_any_split_parses_as_whole_and_keeps_the_invariants(
    text: str,
    cuts: list[int],
    mode: ThinkMode,
    kind: ContentKind,
    cut: bool,
    max_calls: int | None,
) -> None:
    whole, whole_summary = parse([text], mode, kind, cut=cut, max_calls=max_calls)
    streamed, streamed_summary = parse(split(text, cuts), mode, kind, cut=cut, max_calls=max_calls)
    assert normalized(streamed) == normalized(whole)
    assert streamed_summary == whole_summary
    reason = whole_summary.finish_reason("length" if cut else "stop")
    check_stream([Start("m"), *whole, Stop(reason)])


@fuzz_settings(150)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["text", "reasoning", "start", "delta"]), model_text),
        max_size=12,
    ),
    mode=modes,
    kind=kinds,
    cut=st.booleans(),
)
def test_upstream_parsed_calls_mixed_with_text_keep_the_invariants(
    steps: list[tuple[str, str]], mode: ThinkMode, kind: ContentKind, cut: bool
) -> None:
    """What `openai_compat` feeds: raw text, reasoning the engine separated, and calls the
    engine parsed itself (numbered by the upstream), in any order."""
    parser = Qwen3OutputParser(
        think_mode=mode,
        content_parser=content_parser(kind),
        tool_names=set(SCHEMAS),
        schemas=SCHEMAS,
    )
    events: list[Event] = []
    upstream_call = -1
    for step, text in steps:
        if step == "text":
            events += parser.feed(text)
        elif step == "reasoning":
            events += parser.feed_reasoning(text)
        elif step == "start":
            upstream_call += 1
            name = "weather" if upstream_call % 3 else "unknown"
            events += parser.feed_external_call(ToolCallStart(upstream_call, "id", name))
        else:
            events += parser.feed_external_call(ToolCallDelta(max(upstream_call, 0), text))
    final, summary = parser.finish(cut=cut)
    check_stream([Start("m"), *events, *final, Stop(summary.finish_reason("stop"))])


# Python literals too: a value that is not JSON is tried as one (ast.literal_eval).
PYTHON_TOKENS = ["(", ")", ",", "'", "b'x'", "{1}", "1j", "-", "1" * 5000, "(" * 200, "None"]
parameter_text = st.lists(
    st.sampled_from(TOKENS + PYTHON_TOKENS) | st.text(max_size=4), max_size=25
).map("".join)


@fuzz_settings(300)
@given(
    text=parameter_text,
    types=st.frozensets(
        st.sampled_from(["string", "integer", "number", "boolean", "object", "array", "null"])
    ),
)
def test_coder_xml_values_coerce_without_raising(text: str, types: frozenset[str]) -> None:
    coerce(text, types)

"""Qwen3JsonToolParser: `<tool_call>` JSON blocks in the content channel."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.parsers._streaming import chunks, run

from modelport.parsers.base import CallArguments, CallEnd, CallStart, Content, Malformed, Piece
from modelport.parsers.qwen3_json import Qwen3JsonToolParser

TOOLS = {"get_weather", "search", "noop"}


def parse(text: str, parts: list[str] | None = None, tools: set[str] | None = None) -> list[Piece]:
    parser = Qwen3JsonToolParser(tools)
    return run(parser.feed, parser.finish, parts if parts is not None else [text])


def block(body: str) -> str:
    return f"<tool_call>\n{body}\n</tool_call>"


def assert_same_every_way(text: str, expected: list[Piece]) -> None:
    assert parse(text, tools=TOOLS) == expected
    assert parse(text, list(text), tools=TOOLS) == expected


def test_text_then_two_calls() -> None:
    text = (
        "Let me check both.\n\n"
        + block('{"name": "get_weather", "arguments": {"city": "Paris"}}')
        + "\n"
        + block('{"name": "search", "arguments": {"q": "Lyon", "limit": 3}}')
        + "\n"
    )
    assert_same_every_way(
        text,
        [
            Content("Let me check both."),
            CallStart("get_weather"),
            CallArguments('{"city": "Paris"}'),
            CallEnd(),
            CallStart("search"),
            CallArguments('{"q": "Lyon", "limit": 3}'),
            CallEnd(),
        ],
    )


def test_nested_arguments_with_tag_like_strings_and_unicode_pass_through_as_written() -> None:
    arguments = (
        '{"code": "print(\\"</tool_call>\\")\\n", "opts": {"tags": ["<tool_call>", "}{"],'
        ' "deep": [[1, {"x": null}]], "city": "São Paulo 😀"}}'
    )
    text = block(f'{{"name": "search", "arguments": {arguments}}}')
    assert_same_every_way(text, [CallStart("search"), CallArguments(arguments), CallEnd()])
    assert json.loads(arguments)["opts"]["tags"][0] == "<tool_call>"


def test_call_start_and_arguments_stream_before_the_block_closes() -> None:
    parser = Qwen3JsonToolParser(TOOLS)
    assert parser.feed('<tool_call>\n{"name": "get_weather", "arguments": ') == []
    assert parser.feed('{"city": "Pa') == [
        CallStart("get_weather"),
        CallArguments('{"city": "Pa'),
    ]
    assert parser.feed('ris"}}\n</tool_') == [CallArguments('ris"}')]
    assert parser.feed("call>") == [CallEnd()]
    assert parser.finish() == []


def test_text_around_calls_keeps_its_content_and_drops_only_joining_whitespace() -> None:
    text = "  Intro:\n" + block('{"name": "noop", "arguments": {}}') + "\n\nOutro.\n"
    assert_same_every_way(
        text,
        [
            Content("  Intro:"),
            CallStart("noop"),
            CallArguments("{}"),
            CallEnd(),
            Content("Outro.\n"),
        ],
    )


def test_plain_text_passes_through_untouched() -> None:
    assert_same_every_way("a < b and <tool is fine\n\n", [Content("a < b and <tool is fine\n\n")])


@pytest.mark.parametrize(
    ("body", "name", "arguments"),
    [
        # keys in the other order: read whole, re-serialised
        (
            '{"arguments": {"city": "Oslo"}, "name": "get_weather"}',
            "get_weather",
            '{"city": "Oslo"}',
        ),
        # arguments as a string holding an object: accepted, the string's content
        (
            '{"name": "get_weather", "arguments": " {\\"city\\": \\"Oslo\\"} "}',
            "get_weather",
            '{"city": "Oslo"}',
        ),
        # an extra key after the arguments
        ('{"name": "noop", "arguments": {}, "id": 1}', "noop", "{}"),
    ],
)
def test_other_valid_shapes(body: str, name: str, arguments: str) -> None:
    assert_same_every_way(block(body), [CallStart(name), CallArguments(arguments), CallEnd()])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"name": "get_weather", "arguments": {"city": "Paris"}', "invalid JSON"),
        ('{"name": "get_weather"}', 'missing "arguments"'),
        ('{"arguments": {}}', 'missing "name"'),
        ('{"name": "delete_all", "arguments": {}}', "unknown tool 'delete_all'"),
        ('{"name": "noop", "arguments": [1]}', "arguments are not a JSON object"),
        ('{"name": "noop", "arguments": "[1]"}', "arguments are not a JSON object"),
        ('{"name": "noop", "arguments": "nope"}', "arguments are a string that is not JSON"),
        ("[1, 2]", "not a JSON object"),
        ("get_weather(city='Paris')", "invalid JSON"),
    ],
)
def test_malformed_blocks_are_reported_with_their_raw_text(body: str, reason: str) -> None:
    text = "Before " + block(body) + " after"
    pieces = parse(text, tools=TOOLS)
    assert pieces == parse(text, list(text), tools=TOOLS)
    malformed = [piece for piece in pieces if isinstance(piece, Malformed)]
    assert len(malformed) == 1
    assert malformed[0].raw == block(body)
    assert malformed[0].reason.startswith(reason)
    assert pieces[0] == Content("Before")
    assert pieces[-1] == Content("after")
    assert not any(isinstance(piece, CallEnd) for piece in pieces)


def test_a_call_broken_after_its_start_ends_with_malformed() -> None:
    body = '{"name": "search", "arguments": {"q": 1} "oops"}'
    assert_same_every_way(
        block(body),
        [
            CallStart("search"),
            CallArguments('{"q": 1}'),
            Malformed(block(body), "invalid JSON: Expecting ',' delimiter"),
        ],
    )


def test_output_cut_off_inside_a_call_is_malformed_not_content() -> None:
    text = 'Ok.\n<tool_call>\n{"name": "search", "arguments": {"q": "unfini'
    assert_same_every_way(
        text,
        [
            Content("Ok."),
            CallStart("search"),
            CallArguments('{"q": "unfini'),
            Malformed(text[len("Ok.\n") :], "unclosed tool call", cut=True),
        ],
    )


def test_any_tool_name_is_accepted_without_a_tool_list() -> None:
    text = block('{"name": "anything", "arguments": {}}')
    assert parse(text) == [CallStart("anything"), CallArguments("{}"), CallEnd()]


# --- generated outputs -------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.text(alphabet=st.sampled_from('ab "\\/<>{}[]\n\té😀_:,'), max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='abc<>/"', max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
ARGUMENTS = st.dictionaries(st.text(alphabet='xyz_<"', max_size=5), JSON_VALUES, max_size=4)
TEXTS = st.sampled_from(["", "\n", "\n\n", "Sure.", " a < b ", "<tool", "Done.\n", "é😀"])


@st.composite
def outputs(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]]]:
    """Text and calls interleaved as Qwen3 writes them, with the calls' arguments."""
    parts: list[str] = [draw(TEXTS)]
    calls: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 3))):
        arguments = draw(ARGUMENTS)
        compact = draw(st.booleans())
        encoded = json.dumps(
            arguments,
            ensure_ascii=draw(st.booleans()),
            separators=(",", ":") if compact else None,
            indent=draw(st.sampled_from([None, 2])),
        )
        parts.append(block(f'{{"name": "search", "arguments": {encoded}}}'))
        parts.append(draw(TEXTS))
        calls.append(arguments)
    return "".join(parts), calls


def call_arguments(pieces: list[Piece]) -> list[Any]:
    found: list[Any] = []
    for piece in pieces:
        if isinstance(piece, CallStart):
            found.append("")
        elif isinstance(piece, CallArguments):
            found[-1] += piece.fragment
    return [json.loads(text) for text in found]


@given(outputs(), st.lists(st.integers(0, 400), max_size=20))
def test_streamed_equals_whole_and_arguments_round_trip(
    output: tuple[str, list[dict[str, Any]]], cuts: list[int]
) -> None:
    text, calls = output
    whole = parse(text, tools=TOOLS)
    assert parse(text, chunks(text, cuts), tools=TOOLS) == whole
    assert call_arguments(whole) == calls
    assert sum(isinstance(piece, CallEnd) for piece in whole) == len(calls)
    assert not any(isinstance(piece, Malformed) for piece in whole)
    if calls:  # whitespace that only joins calls and text is not content
        assert all(piece.text.strip() for piece in whole if isinstance(piece, Content))

"""Qwen3-Coder XML tool calls (parsers/qwen3_coder_xml.py): exact pieces for the shapes the
model writes, the documented decisions, and streamed equals whole under any split."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.parsers.base import (
    CallArguments,
    CallEnd,
    CallStart,
    Content,
    Malformed,
    Piece,
    merge_adjacent,
)
from modelport.parsers.qwen3_coder_xml import Qwen3CoderXmlToolParser

TOOLS: dict[str, dict[str, Any]] = {
    "search_products": {
        "type": "object",
        "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
    },
    "write_file": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
    },
    "typed": {
        "type": "object",
        "properties": {
            "i": {"type": "integer"},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "z": {"type": "null"},
            "o": {"type": "object"},
            "a": {"type": "array", "items": {"type": "integer"}},
            "maybe_int": {"type": ["integer", "null"]},
            "any_of": {"anyOf": [{"type": "array"}, {"type": "string"}]},
            "color": {"enum": ["red", "green"]},
            "level": {"enum": [1, 2, 3]},
        },
    },
    "ping": {"type": "object", "properties": {}},
}

SEARCH = (
    "<tool_call>\n<function=search_products>\n<parameter=query>\nwaterproof running shoes\n"
    "</parameter>\n<parameter=limit>\n5\n</parameter>\n</function>\n</tool_call>"
)


def call(name: str, **params: str) -> str:
    """A call rendered the way the model writes it."""
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>"


def parse(text: str, chunks: list[int] | None = None) -> list[Piece]:
    """All pieces of `text`, fed whole or cut at the given sizes."""
    parser = Qwen3CoderXmlToolParser(TOOLS)
    pieces: list[Piece] = []
    if chunks is None:
        pieces += parser.feed(text)
    else:
        at = 0
        for size in chunks:
            pieces += parser.feed(text[at : at + size])
            at += size
        pieces += parser.feed(text[at:])
    return pieces + parser.finish()


def merged(pieces: list[Piece]) -> list[Piece]:
    """Adjacent Content and adjacent CallArguments joined: what a split may change."""
    return merge_adjacent(pieces)


def calls(pieces: list[Piece]) -> list[tuple[str, Any]]:
    """(name, arguments) of each completed call; asserts each argument text is JSON."""
    done: list[tuple[str, Any]] = []
    name, fragments = "", ""
    for piece in pieces:
        if isinstance(piece, CallStart):
            name, fragments = piece.name, ""
        elif isinstance(piece, CallArguments):
            fragments += piece.fragment
        elif isinstance(piece, CallEnd):
            done.append((name, json.loads(fragments)))
    return done


def arguments_of(text: str) -> Any:
    [(_, arguments)] = calls(parse(text))
    return arguments


def test_one_call_streams_start_then_each_parameter_then_end() -> None:
    assert parse(SEARCH) == [
        CallStart("search_products"),
        CallArguments('{"query": "'),
        CallArguments('waterproof running shoes"'),
        CallArguments(', "limit": 5'),
        CallArguments("}"),
        CallEnd(),
    ]


def test_start_is_emitted_as_soon_as_the_function_tag_is_complete() -> None:
    parser = Qwen3CoderXmlToolParser(TOOLS)
    assert parser.feed("<tool_call>\n<function=search_pro") == []
    assert parser.feed("ducts>") == [CallStart("search_products")]


def test_a_string_value_streams_before_its_closing_tag() -> None:
    parser = Qwen3CoderXmlToolParser(TOOLS)
    parser.feed("<tool_call>\n<function=write_file>\n<parameter=content>\nline one\nline")
    # "\n</param" could still be the end of the value, so it is held back.
    assert parser.feed(" two\n</param") == [CallArguments(" two")]
    assert parser.feed("eter>\n") == [CallArguments('"')]


def test_content_before_and_between_calls_without_blank_lines() -> None:
    text = "I'll search twice.\n\n" + SEARCH + "\n" + SEARCH + "\n\nDone.\n"
    pieces = merged(parse(text))
    assert pieces[0] == Content("I'll search twice.")
    assert pieces[-1] == Content("Done.\n")  # not touching a call: kept
    assert [p for p in pieces if isinstance(p, Content)] == pieces[:1] + pieces[-1:]
    assert (
        calls(pieces)
        == [("search_products", {"query": "waterproof running shoes", "limit": 5})] * 2
    )


def test_text_without_calls_is_content_unchanged() -> None:
    text = "Use a <b>bold</b> tag, or <tool_ maybe.\n\n"
    assert merged(parse(text)) == [Content(text)]
    assert merged(parse(text, [1] * len(text))) == [Content(text)]


def test_missing_closing_tool_call_after_a_complete_function_is_tolerated() -> None:
    pieces = parse(SEARCH.removesuffix("\n</tool_call>") + "\n</tool_")
    assert calls(pieces) == [("search_products", {"query": "waterproof running shoes", "limit": 5})]
    assert not any(isinstance(p, Malformed) for p in pieces)


def test_a_function_without_parameters_has_empty_arguments() -> None:
    assert parse("<tool_call>\n<function=ping>\n</function>\n</tool_call>") == [
        CallStart("ping"),
        CallArguments("{}"),
        CallEnd(),
    ]


@pytest.mark.parametrize(
    ("param", "raw", "value"),
    [
        ("i", "42", 42),
        ("i", "-7", -7),
        ("i", "3.0", 3),
        ("i", "3.5", "3.5"),  # no integer: kept as the model wrote it
        ("n", "2.5", 2.5),
        ("n", "1e3", 1000.0),
        ("n", "7", 7),
        ("n", "nan", "nan"),
        ("b", "true", True),
        ("b", "False", False),
        ("b", "yes", "yes"),
        ("z", "null", None),
        ("o", '{"a": {"b": [1, 2, {"c": null}]}}', {"a": {"b": [1, 2, {"c": None}]}}),
        ("o", "{'a': True, 'b': (1, 2)}", {"a": True, "b": [1, 2]}),
        ("o", "[1, 2]", "[1, 2]"),  # an array is not an object
        ("o", "{broken", "{broken"),
        ("a", '[1, [2, 3], {"k": "v"}]', [1, [2, 3], {"k": "v"}]),
        ("a", "{1, 2}", "{1, 2}"),  # a Python set has no JSON form
        ("maybe_int", "null", None),
        ("maybe_int", "12", 12),
        ("any_of", '["x"]', ["x"]),
        ("any_of", "plain text", "plain text"),
        ("color", "red", "red"),
        ("level", "2", 2),
        ("unknown_param", "123", "123"),  # undeclared: a string
    ],
)
def test_values_are_coerced_to_the_declared_type(param: str, raw: str, value: Any) -> None:
    assert arguments_of(call("typed", **{param: raw})) == {param: value}


def test_the_string_null_stays_a_string_for_string_parameters() -> None:
    assert arguments_of(call("search_products", query="null")) == {"query": "null"}


def test_multi_line_code_with_tags_and_unicode_is_kept_verbatim() -> None:
    code = (
        'if a < b and "</parameter>" in s:\n'
        "    html = '<div class=\"x\">é → 日本</div>'\n"
        "  </parameter> <parameter=path>\n"
        "</function></tool_call>\n"
        "\n"
    )
    text = call("write_file", path="src/a.py", content=code)
    expected = {"path": "src/a.py", "content": code}
    assert arguments_of(text) == expected
    assert calls(parse(text, [3] * len(text))) == [("write_file", expected)]


def test_values_written_without_the_wrapping_newlines() -> None:
    text = (
        "<tool_call><function=search_products><parameter=query>shoes</parameter>"
        "<parameter=limit>3\n</parameter></function></tool_call>"
    )
    assert arguments_of(text) == {"query": "shoes", "limit": 3}


def test_empty_values() -> None:
    assert arguments_of(call("write_file", content="")) == {"content": ""}
    text = "<tool_call>\n<function=write_file>\n<parameter=content>\n</parameter>\n</function>"
    assert arguments_of(text) == {"content": ""}


def test_unknown_function_is_malformed_and_parsing_resumes() -> None:
    bad = call("delete_everything", path="/")
    pieces = merged(parse("Sure.\n" + bad + "\nok" + SEARCH))
    assert pieces[:2] == [Content("Sure."), Malformed(bad, "unknown function 'delete_everything'")]
    assert pieces[2] == Content("ok")
    assert calls(pieces) == [("search_products", {"query": "waterproof running shoes", "limit": 5})]


def test_garbage_inside_tool_call_is_malformed() -> None:
    text = '<tool_call>\n{"name": "search_products"}\n</tool_call>'
    assert parse(text) == [Malformed(text, "expected <function=NAME> inside <tool_call>")]


def test_garbage_between_parameters_abandons_the_started_call() -> None:
    text = (
        "<tool_call>\n<function=search_products>\n<parameter=limit>\n5\n</parameter>\n"
        "oops\n</function>\n</tool_call>"
    )
    assert parse(text) == [
        CallStart("search_products"),
        CallArguments('{"limit": 5'),
        Malformed(text, "unexpected text inside <function=search_products>"),
    ]


def test_malformed_parameter_tag() -> None:
    text = (
        "<tool_call>\n<function=ping>\n<parameter=a\nb>\n1\n</parameter>\n</function>\n</tool_call>"
    )
    pieces = parse(text)
    assert pieces == [CallStart("ping"), Malformed(text, "malformed <parameter=NAME> tag")]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<tool_call>\n<function=search", "unclosed <tool_call> at the end of the output"),
        (
            "<tool_call>\n<function=write_file>\n<parameter=content>\nhalf a fi",
            "unclosed <function=write_file> at the end of the output",
        ),
        (
            "<tool_call>\n<function=nope>\n",
            "unknown function 'nope'; no </tool_call> before the end of the output",
        ),
    ],
)
def test_blocks_left_open_at_the_end_are_malformed(text: str, reason: str) -> None:
    pieces = parse(text)
    # cut: the output ended inside the block (an excuse only when max_tokens ended it).
    assert pieces[-1] == Malformed(text, reason, cut=True)
    assert merged(parse(text, [1] * len(text)))[-1] == Malformed(text, reason, cut=True)


# --- streamed equals whole ---------------------------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
STRING = st.text(max_size=40).filter(lambda s: "\n</parameter>" not in s)


@st.composite
def parameter(draw: st.DrawFn) -> tuple[dict[str, Any], str, Any]:
    """(schema, rendered text, expected value) of one parameter."""
    kind = draw(
        st.sampled_from(
            ["string", "integer", "number", "boolean", "null", "object", "array", "opt"]
        )
    )
    if kind == "string":
        value = draw(STRING)
        return {"type": "string"}, value, value
    if kind == "integer":
        number = draw(st.integers())
        return {"type": "integer"}, str(number), number
    if kind == "number":
        real = draw(st.floats(allow_nan=False, allow_infinity=False))
        return {"type": "number"}, json.dumps(real), real
    if kind == "boolean":
        flag = draw(st.booleans())
        return {"type": "boolean"}, draw(st.sampled_from([str(flag), str(flag).lower()])), flag
    if kind == "null":
        return {"type": "null"}, "null", None
    if kind == "opt":
        maybe = draw(st.none() | st.integers())
        return {"anyOf": [{"type": "integer"}, {"type": "null"}]}, json.dumps(maybe), maybe
    structured: Any = draw(st.dictionaries(st.text(max_size=5), JSON, max_size=3))
    if kind == "array":
        structured = draw(st.lists(JSON, max_size=3))
    return {"type": kind}, json.dumps(structured, ensure_ascii=draw(st.booleans())), structured


@st.composite
def conversation(draw: st.DrawFn) -> tuple[dict[str, dict[str, Any]], str, list[tuple[str, Any]]]:
    """Tools, a model output with content around generated calls, and the expected calls."""
    tools: dict[str, dict[str, Any]] = {}
    text = draw(st.text(max_size=10))
    expected: list[tuple[str, Any]] = []
    for name in draw(st.lists(NAMES, min_size=1, max_size=3, unique=True)):
        params = draw(st.dictionaries(NAMES, parameter(), max_size=4))
        tools[name] = {"type": "object", "properties": {k: p[0] for k, p in params.items()}}
        body = "".join(f"<parameter={k}>\n{p[1]}\n</parameter>\n" for k, p in params.items())
        text += f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>"
        text += draw(st.sampled_from(["\n", "", "\n\n"])) + draw(st.text(max_size=10))
        expected.append((name, {k: p[2] for k, p in params.items()}))
    return tools, text, expected


def feed_in_chunks(tools: dict[str, dict[str, Any]], text: str, cuts: list[int]) -> list[Piece]:
    parser = Qwen3CoderXmlToolParser(tools)
    pieces: list[Piece] = []
    at = 0
    for cut in sorted(cuts):
        pieces += parser.feed(text[at:cut])
        at = cut
    return pieces + parser.feed(text[at:]) + parser.finish()


@settings(max_examples=300)
@given(conversation(), st.data())
def test_generated_calls_stream_equal_to_whole(
    case: tuple[dict[str, dict[str, Any]], str, list[tuple[str, Any]]], data: st.DataObject
) -> None:
    tools, text, expected = case
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=20))
    whole = merged(feed_in_chunks(tools, text, []))
    assert merged(feed_in_chunks(tools, text, cuts)) == whole
    assert calls(whole) == expected
    for piece in whole:
        assert not isinstance(piece, Malformed)


TOKENS = st.sampled_from(
    [
        "<tool_call>",
        "</tool_call>",
        "<function=ping>",
        "<function=typed>",
        "<function=nope>",
        "<parameter=a>",
        "<parameter=o>",
        "</parameter>",
        "</function>",
        "<tool_",
        "</param",
        "\n",
        " ",
        "x",
        "<",
        ">",
        "5",
        "{",
    ]
)


@settings(max_examples=500)
@given(st.lists(TOKENS, max_size=30).map("".join), st.data())
def test_any_mix_of_tags_streams_equal_to_whole_and_calls_stay_well_formed(
    text: str, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=20))
    whole = merged(feed_in_chunks(TOOLS, text, []))
    assert merged(feed_in_chunks(TOOLS, text, cuts)) == whole
    assert merged(feed_in_chunks(TOOLS, text, list(range(len(text))))) == whole
    # Every started call ends exactly once, completed (valid JSON) or abandoned.
    open_call = False
    for piece in whole:
        if isinstance(piece, CallStart):
            assert not open_call
            open_call = True
        elif isinstance(piece, CallArguments):
            assert open_call
        elif isinstance(piece, CallEnd | Malformed):
            open_call = False
    assert not open_call
    calls(whole)  # each completed call's arguments parse as JSON


def test_closing_tool_call_without_closing_function_ends_the_call() -> None:
    text = (
        "<tool_call>\n<function=search_products>\n<parameter=limit>\n2\n</parameter>\n</tool_call>"
    )
    assert arguments_of(text) == {"limit": 2}


def test_two_functions_in_one_block_are_two_calls() -> None:
    text = (
        "<tool_call>\n<function=ping>\n</function>\n"
        "<function=search_products>\n<parameter=limit>\n1\n</parameter>\n</function>\n</tool_call>"
    )
    assert calls(parse(text)) == [("ping", {}), ("search_products", {"limit": 1})]


def test_unwrapped_string_value_drops_its_trailing_newline_under_any_split() -> None:
    text = "<tool_call><function=write_file><parameter=content>a\n\n</parameter></function>"
    for size in (1, 2, 3, len(text)):
        assert calls(parse(text, [size] * len(text))) == [("write_file", {"content": "a\n"})]

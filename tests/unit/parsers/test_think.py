"""ThinkParser: Qwen3's think block split off, whole, per character and at random splits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.parsers._streaming import chunks, run

from modelport.parsers.base import Content, Piece, Reasoning
from modelport.parsers.think import ThinkMode, ThinkParser


def parse(text: str, mode: ThinkMode, parts: list[str] | None = None) -> tuple[list[Piece], bool]:
    parser = ThinkParser(mode)
    pieces = run(parser.feed, parser.finish, parts if parts is not None else [text])
    return pieces, parser.think_closed


def per_char(text: str, mode: ThinkMode) -> tuple[list[Piece], bool]:
    return parse(text, mode, list(text))


CASES: list[tuple[str, ThinkMode, list[Piece], bool]] = [
    (  # hybrid Qwen3, thinking on
        "<think>\nThe user greets me.\n</think>\n\nHello! How can I help?",
        "open",
        [Reasoning("The user greets me."), Content("Hello! How can I help?")],
        True,
    ),
    (  # /no_think: the model writes an empty block itself
        "<think>\n\n</think>\n\nParis.",
        "open",
        [Content("Paris.")],
        True,
    ),
    (  # no think block at all: content exactly as written
        "\nParis is the capital.\n",
        "open",
        [Content("\nParis is the capital.\n")],
        True,
    ),
    (  # Thinking-2507: the prompt opened the block
        "Okay, 2+2.\nThat is 4.\n</think>\n\n4",
        "preopened",
        [Reasoning("Okay, 2+2.\nThat is 4."), Content("4")],
        True,
    ),
    (  # cut off inside reasoning: stays reasoning, reported unclosed
        "<think>\nFirst, consider the</thi",
        "open",
        [Reasoning("First, consider the</thi")],
        False,
    ),
    (
        "Still thinking\n\n",
        "preopened",
        [Reasoning("Still thinking\n\n")],
        False,
    ),
    (  # enable_thinking=False: tags are plain text, newlines untouched
        "\n<think>x</think>\n\nanswer",
        "off",
        [Content("\n<think>x</think>\n\nanswer")],
        True,
    ),
    (  # only the first block is reasoning; spaces and inner newlines survive
        "<think>\n  a\n\nb  \n</think>\n\n  c <think>d</think>",
        "open",
        [Reasoning("  a\n\nb  "), Content("  c <think>d</think>")],
        True,
    ),
    ("<thi", "open", [Content("<thi")], True),
    ("", "open", [], True),
    ("<think>", "open", [], False),
    (
        "  <think>\nx\n</think>\n\n\u00e9t\u00e9 \U0001f600",
        "open",
        [Reasoning("x"), Content("\u00e9t\u00e9 \U0001f600")],
        True,
    ),
]


@pytest.mark.parametrize(("text", "mode", "expected", "closed"), CASES)
def test_whole_and_per_character(
    text: str, mode: ThinkMode, expected: list[Piece], closed: bool
) -> None:
    assert parse(text, mode) == (expected, closed)
    assert per_char(text, mode) == (expected, closed)


def test_reasoning_streams_before_the_block_closes() -> None:
    parser = ThinkParser("open")
    assert parser.feed("<think>\nStep one") == [Reasoning("Step one")]
    assert not parser.think_closed
    assert parser.feed(".\n</th") == [Reasoning(".")]  # newline and partial tag held back
    assert parser.feed("ink>\n\nDone") == [Content("Done")]
    assert parser.think_closed
    assert parser.finish() == []


def test_held_back_newline_is_released_when_reasoning_goes_on() -> None:
    parser = ThinkParser("preopened")
    assert parser.feed("a\n") == [Reasoning("a")]
    assert parser.feed("b") == [Reasoning("\nb")]


PIECES = st.sampled_from(
    ["<think>", "</think>", "\n", "\n\n", " ", "<", "</", "think", ">", "Hi", "é😀", "x\ny"]
)


@given(
    st.lists(PIECES, max_size=12).map("".join),
    st.sampled_from(["open", "preopened", "off"]),
    st.lists(st.integers(0, 60), max_size=10),
)
def test_streamed_equals_whole(text: str, mode: ThinkMode, cuts: list[int]) -> None:
    assert parse(text, mode, chunks(text, cuts)) == parse(text, mode)
    assert per_char(text, mode) == parse(text, mode)

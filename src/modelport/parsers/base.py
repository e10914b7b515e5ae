"""The vocabulary of the model-output parsers: pure, incremental state machines.

A parser is fed the model's raw text in arbitrary chunks (a token, several, or a split inside
a tag) and returns the pieces it can already tell apart; `finish` flushes what it held back.
Feeding the same text split differently must give the same pieces once adjacent pieces of the
same kind are merged ("streamed equals whole"). Parsers never see tokens, HTTP or events:
`parsers.qwen3` turns their pieces into numbered canonical events.

Two layers:
- reasoning: `<think>…</think>` splits the text into `Reasoning` and `Content` pieces;
- tool calls: the content channel is split into `Content` text and tool calls, each a
  `CallStart` then `CallArguments` fragments (JSON text that concatenates to the call's
  arguments object) then `CallEnd`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Reasoning:
    text: str


@dataclass(frozen=True)
class Content:
    text: str


@dataclass(frozen=True)
class CallStart:
    name: str


@dataclass(frozen=True)
class CallArguments:
    fragment: str  # a piece of the arguments' JSON text


@dataclass(frozen=True)
class CallEnd:
    pass


@dataclass(frozen=True)
class Malformed:
    """Output that looked like a tool call but is not one that can be honoured (unparsable
    JSON, an unknown function, a missing closing tag at the end). `raw` is the text as the
    model wrote it, so the caller can report it or pass it through as content. `cut`: the
    output ended inside it (no fault of the model's when max_tokens ended the output)."""

    raw: str
    reason: str
    cut: bool = False


Piece = Reasoning | Content | CallStart | CallArguments | CallEnd | Malformed


class ContentParser(Protocol):
    """Parses the content channel (reasoning already split off) for tool calls."""

    def feed(self, text: str) -> list[Piece]: ...

    def finish(self, *, cut: bool = False) -> list[Piece]:
        """The rest. `cut`: the output was cut off (max_tokens), so text held back because it
        may begin a call is the start of a call, and is dropped rather than shown."""
        ...


def longest_partial_suffix(text: str, marker: str) -> int:
    """The length of the longest suffix of `text` that is a proper prefix of `marker`: how
    much text must be held back because the next chunk may complete the marker."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def merge_adjacent(pieces: Sequence[Piece]) -> list[Piece]:
    """Adjacent reasoning, content or argument pieces joined: one delta each per feed, and the
    form in which "streamed equals whole" holds (a split may only change these boundaries)."""
    merged: list[Piece] = []
    for piece in pieces:
        last = merged[-1] if merged else None
        if isinstance(piece, Reasoning) and isinstance(last, Reasoning):
            merged[-1] = Reasoning(last.text + piece.text)
        elif isinstance(piece, Content) and isinstance(last, Content):
            merged[-1] = Content(last.text + piece.text)
        elif isinstance(piece, CallArguments) and isinstance(last, CallArguments):
            merged[-1] = CallArguments(last.fragment + piece.fragment)
        else:
            merged.append(piece)
    return merged

"""Feeding helpers shared by the parser tests: split text, feed it, merge what comes out."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from modelport.parsers.base import Piece, merge_adjacent


def chunks(text: str, cuts: Sequence[int]) -> list[str]:
    """`text` split at the given offsets (sorted, deduplicated, clipped to the text)."""
    points = sorted({0, len(text), *(cut for cut in cuts if 0 < cut < len(text))})
    return [text[start:end] for start, end in itertools.pairwise(points)]


def merged(pieces: Sequence[Piece]) -> list[Piece]:
    """Adjacent reasoning, content or argument pieces joined: the form in which "streamed
    equals whole" is stated."""
    return merge_adjacent(pieces)


def run(
    feed: Callable[[str], Sequence[Piece]],
    finish: Callable[[], Sequence[Piece]],
    parts: Sequence[str],
) -> list[Piece]:
    """Feed each part, then finish; the merged pieces."""
    pieces: list[Piece] = []
    for part in parts:
        pieces += feed(part)
    pieces += finish()
    return merged(pieces)

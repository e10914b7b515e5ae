"""The incremental SSE parser: whole, byte by byte and in generated splits give the same events."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modelport.protocols.openai.sse import SSEParser


def parse_all(parts: list[bytes]) -> list[tuple[str | None, bytes]]:
    parser = SSEParser()
    out = []
    for part in parts:
        out.extend(parser.feed(part))
    out.extend(parser.close())
    return out


SAMPLE = (
    b": keepalive\n\n"
    b'data: {"a": 1}\n\n'
    b"event: error\r\n"
    b'data: {"error":\r\n'
    b'data:  "x"}\r\n'
    b"\r\n"
    b"id: 7\n"
    b"retry: 100\n"
    b"data:no-space\n\n"
    b"data: [DONE]\n\n"
)
SAMPLE_EVENTS = [
    (None, b'{"a": 1}'),
    ("error", b'{"error":\n "x"}'),
    (None, b"no-space"),
    (None, b"[DONE]"),
]


def test_sse_parser_handles_comments_crlf_multiline_data_and_event_names() -> None:
    assert parse_all([SAMPLE]) == SAMPLE_EVENTS


def test_sse_parser_byte_by_byte_equals_whole() -> None:
    assert parse_all([SAMPLE[i : i + 1] for i in range(len(SAMPLE))]) == SAMPLE_EVENTS


def test_sse_parser_flushes_an_event_without_a_final_blank_line() -> None:
    assert parse_all([b"data: last"]) == [(None, b"last")]
    assert parse_all([b"data: x\n"]) == [(None, b"x")]


line_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20
)


@st.composite
def sse_streams(
    draw: st.DrawFn, newlines: tuple[bytes, ...] = (b"\n", b"\r\n")
) -> tuple[bytes, list[tuple[str | None, bytes]]]:
    stream = b""
    expected: list[tuple[str | None, bytes]] = []
    for _ in range(draw(st.integers(0, 6))):
        newline = draw(st.sampled_from(newlines))
        if draw(st.booleans()):
            stream += b": ping" + newline
        if draw(st.booleans()):
            stream += newline  # a blank line between events
        name = draw(st.none() | st.sampled_from(["error", "message"]))
        if name is not None:
            stream += b"event: " + name.encode() + newline
        lines = draw(st.lists(line_text, min_size=1, max_size=3))
        for line in lines:
            stream += b"data: " + line.encode() + newline
        stream += newline
        expected.append((name, b"\n".join(line.encode() for line in lines)))
    return stream, expected


@given(sse_streams(), st.lists(st.integers(0, 400), max_size=12))
def test_sse_parser_streamed_equals_whole(
    case: tuple[bytes, list[tuple[str | None, bytes]]], cuts: list[int]
) -> None:
    stream, expected = case
    points = sorted({min(cut, len(stream)) for cut in cuts})
    parts = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert parse_all([stream]) == expected
    assert parse_all(parts) == expected


# LF only, the usual upstream: whole `data: ` events take the parser's block-at-a-time path, and
# the lines around them (comments, names, several data lines, blank lines) the line-by-line one.
@given(sse_streams(newlines=(b"\n",)), st.lists(st.integers(0, 400), max_size=12))
def test_sse_parser_lf_streams_in_any_split_equal_whole(
    case: tuple[bytes, list[tuple[str | None, bytes]]], cuts: list[int]
) -> None:
    stream, expected = case
    points = sorted({min(cut, len(stream)) for cut in cuts})
    parts = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert parse_all([stream]) == expected
    assert parse_all(parts) == expected
    assert parse_all([stream[i : i + 1] for i in range(len(stream))]) == expected

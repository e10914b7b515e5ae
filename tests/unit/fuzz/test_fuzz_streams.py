"""Fuzzing what reads an upstream's answer (docs/fuzzing.md): the SSE parser
(`protocols/openai/sse.py`) and the chunk translator (`protocols/openai/upstream_stream.py`).
An upstream is not trusted: whatever it sends, these return events or raise a `ModelportError`
(an upstream error the client is told about), never another exception; the SSE parser gives
the same events for any split of the same bytes; and a translated answer that finishes keeps
the event invariants (`core.invariants.check_stream`).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st
from tests.support.fuzz import fuzz_settings, json_values, mutated

from modelport.core.errors import ModelportError
from modelport.core.events import Event, Start, Usage
from modelport.core.invariants import check_stream
from modelport.protocols.openai.sse import SSEEvent, SSEParser
from modelport.protocols.openai.upstream_stream import StreamTranslator

# -- the SSE parser ----------------------------------------------------------------------------

SSE_TOKENS = [
    b"data: ",
    b"data:",
    b"event: error",
    b"event:",
    b"id: 1",
    b"retry: 5",
    b": keepalive",
    b"\n",
    b"\r\n",
    b"\r",
    b"\n\n",
    b"[DONE]",
    b'{"choices":[]}',
    b"x",
    b" ",
    b":",
]
sse_bytes = st.lists(st.sampled_from(SSE_TOKENS) | st.binary(max_size=6), max_size=30).map(b"".join)


def parse(chunks: list[bytes]) -> list[SSEEvent] | type[ModelportError]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    try:
        for chunk in chunks:
            events += parser.feed(chunk)
        events += parser.close()
    except ModelportError as error:
        return type(error)
    return events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut for cut in cuts if 0 < cut < len(data))})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@fuzz_settings(300)
@given(data=sse_bytes, cuts=st.lists(st.integers(0, 200), max_size=8))
def test_sse_any_bytes_in_any_split_give_the_same_events(data: bytes, cuts: list[int]) -> None:
    assert parse(split(data, cuts)) == parse([data])


# -- the chunk translator ----------------------------------------------------------------------

TEXT_CHUNK: dict[str, Any] = {
    "id": "c",
    "object": "chat.completion.chunk",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}],
}
REASONING_CHUNK: dict[str, Any] = {
    "choices": [{"index": 0, "delta": {"reasoning_content": "think"}, "logprobs": None}]
}
TOOL_CHUNK: dict[str, Any] = {
    "choices": [
        {
            "index": 0,
            "delta": {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city"'},
                    }
                ]
            },
        }
    ]
}
LOGPROBS_CHUNK: dict[str, Any] = {
    "choices": [
        {
            "index": 0,
            "delta": {"content": "x"},
            "logprobs": {
                "content": [
                    {
                        "token": "x",
                        "logprob": -0.1,
                        "bytes": [120],
                        "top_logprobs": [{"token": "y", "logprob": -2.0, "bytes": None}],
                    }
                ]
            },
        }
    ]
}
FINISH_CHUNK: dict[str, Any] = {
    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}]
}
USAGE_CHUNK: dict[str, Any] = {
    "choices": [],
    "usage": {
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "completion_tokens_details": {"reasoning_tokens": 1},
        "prompt_tokens_details": {"cached_tokens": 2},
    },
}
WHOLE_BODY: dict[str, Any] = {
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {"content": "Hi", "reasoning_content": "hm", "tool_calls": []},
            "finish_reason": "length",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2},
}
COMPLETIONS_CHUNK: dict[str, Any] = {
    "object": "text_completion",
    "choices": [{"index": 0, "text": "raw", "finish_reason": None, "logprobs": {"tokens": []}}],
}
ERROR_CHUNK: dict[str, Any] = {"error": {"message": "boom", "type": "server_error", "code": 500}}
VALID_CHUNKS = [
    TEXT_CHUNK,
    REASONING_CHUNK,
    TOOL_CHUNK,
    LOGPROBS_CHUNK,
    FINISH_CHUNK,
    USAGE_CHUNK,
    WHOLE_BODY,
    COMPLETIONS_CHUNK,
    ERROR_CHUNK,
]

payloads = (
    st.sampled_from(VALID_CHUNKS).map(msgspec.json.encode)
    | st.sampled_from(VALID_CHUNKS)
    .flatmap(lambda c: mutated(copy.deepcopy(c)))
    .map(msgspec.json.encode)
    | json_values().map(msgspec.json.encode)
    | st.binary(max_size=40)
    | st.just(b"[DONE]")
)
sse_events = st.tuples(st.sampled_from([None, None, None, "error", "message", ""]), payloads)


def translate(events: list[tuple[str | None, bytes]]) -> list[Event] | None:
    """The canonical events for a whole upstream answer; None when it raised a
    ModelportError (anything else propagates and fails the test)."""
    translator = StreamTranslator(upstream="fuzz", model="m")
    out: list[Event] = [Start("m")]
    try:
        for name, data in events:
            out += translator.feed(name, data)
        out += translator.finish()
    except ModelportError:
        return None
    return out


def check_translated(events: list[Event]) -> None:
    """The invariants, except that a count the upstream sent that is not a count is read as
    -1: the metering stage does not believe it and recounts (core/usage_check.py)."""
    for event in events:
        if isinstance(event, Usage):
            assert min(event.prompt_tokens, event.completion_tokens) >= -1, event
    check_stream(event for event in events if not isinstance(event, Usage))


@fuzz_settings(150)
@given(events=st.lists(sse_events, max_size=8))
def test_translator_raises_only_modelport_errors_and_keeps_the_invariants(
    events: list[tuple[str | None, bytes]],
) -> None:
    out = translate(events)
    if out is not None:
        check_translated(out)


def tool_chunk(number: int) -> dict[str, Any]:
    """A new call (its own index and id), its arguments whole."""
    call = {
        "index": number,
        "id": f"call_{number}",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
    }
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}


@fuzz_settings(150)
@given(
    kinds=st.lists(
        st.sampled_from(["text", "reasoning", "tool", "logprobs", "usage"]), max_size=10
    ),
    finish=st.sampled_from(["stop", "length", "tool_calls", "content_filter", "weird", "eos"]),
)
def test_well_formed_answers_in_any_order_translate(kinds: list[str], finish: str) -> None:
    fixed = {
        "text": TEXT_CHUNK,
        "reasoning": REASONING_CHUNK,
        "logprobs": LOGPROBS_CHUNK,
        "usage": USAGE_CHUNK,
    }
    chunks = [tool_chunk(n) if kind == "tool" else fixed[kind] for n, kind in enumerate(kinds)]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    out = translate([*((None, msgspec.json.encode(c)) for c in chunks), (None, b"[DONE]")])
    assert out is not None
    check_translated(out)

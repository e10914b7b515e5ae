"""Fuzzing the request decoders of both doors in process (docs/fuzzing.md): whatever bytes a
client sends, a decoder returns a request or raises a `ModelportError` (a 4xx naming what is
wrong), never anything else, which the app would turn into a 500.

Inputs: arbitrary bytes; arbitrary JSON; valid bodies with one place changed (near-valid input
reaches the checks after the wire types); valid bodies with a byte broken; and bodies generated
from the OpenAPI document's request schemas (the decoders' own wire types), valid and invalid,
by schemathesis. CI runs a few hundred derandomized examples; MODELPORT_FUZZ_EXAMPLES=N runs N.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from tests.support.fuzz import fuzz_settings, json_values, mutated

from modelport.core.errors import ModelportError
from modelport.http.app import _route_table
from modelport.http.openapi import build_document
from modelport.protocols.anthropic.decode import (
    decode_count_tokens_request,
    decode_messages_request,
)
from modelport.protocols.openai.decode import decode_chat_request

Decoder = Callable[[bytes], object]

TOOL_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}

OPENAI_BODY: dict[str, Any] = {
    "model": "qwen/qwen3-8b",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "look it up",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "And tomorrow?"},
    ],
    "stream": True,
    "stream_options": {"include_usage": True},
    "temperature": 0.7,
    "top_p": 0.9,
    "top_k": 20,
    "max_tokens": 64,
    "seed": 7,
    "stop": ["\n\n"],
    "logit_bias": {"42": -100},
    "logprobs": True,
    "top_logprobs": 2,
    "tools": [{"type": "function", "function": {"name": "weather", "parameters": TOOL_SCHEMA}}],
    "tool_choice": {"type": "function", "function": {"name": "weather"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": TOOL_SCHEMA}},
    "reasoning": {"effort": "low", "max_tokens": 100},
    "chat_template_kwargs": {"enable_thinking": False},
    "verbosity": "low",
}

ANTHROPIC_BODY: dict[str, Any] = {
    "model": "qwen/qwen3-8b",
    "max_tokens": 64,
    "system": [{"type": "text", "text": "Be brief."}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "look it up", "signature": "s"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "O"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "sunny"}],
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
    "tools": [{"name": "weather", "description": "d", "input_schema": TOOL_SCHEMA}],
    "tool_choice": {"type": "tool", "name": "weather"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "output_config": {"effort": "high"},
    "stop_sequences": ["END"],
    "temperature": 0.5,
    "top_k": 5,
    "stream": True,
    "metadata": {"user_id": "u"},
}

# Each door's decoders and the valid body its near-valid inputs start from.
DOORS: dict[str, tuple[tuple[Decoder, ...], dict[str, Any]]] = {
    "openai": ((decode_chat_request,), OPENAI_BODY),
    "anthropic": ((decode_messages_request, decode_count_tokens_request), ANTHROPIC_BODY),
}
ALL_DECODERS = (decode_chat_request, decode_messages_request, decode_count_tokens_request)


def only_documented_errors(decoders: tuple[Decoder, ...], body: bytes) -> None:
    for decode in decoders:
        try:
            decode(body)
        except ModelportError as error:
            status = error.status
        else:
            continue
        assert 400 <= status < 500, (decode.__name__, body)


@pytest.mark.parametrize("door", sorted(DOORS))
def test_the_seed_bodies_decode(door: str) -> None:
    decoders, body = DOORS[door]
    for decode in decoders:
        decode(msgspec.json.encode(body))


@fuzz_settings(150)
@given(
    body=st.binary(max_size=200)
    | json_values().map(msgspec.json.encode)
    | st.dictionaries(st.text(max_size=16), json_values(), max_size=6).map(msgspec.json.encode)
)
def test_arbitrary_bytes_and_json(body: bytes) -> None:
    only_documented_errors(ALL_DECODERS, body)


@pytest.mark.parametrize("door", sorted(DOORS))
@fuzz_settings(80)
@given(data=st.data())
def test_near_valid_bodies(door: str, data: st.DataObject) -> None:
    decoders, seed = DOORS[door]
    body = copy.deepcopy(seed)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        body = data.draw(mutated(body), label="body")
    only_documented_errors(decoders, msgspec.json.encode(body))


@pytest.mark.parametrize("door", sorted(DOORS))
@fuzz_settings(60)
@given(data=st.data())
def test_valid_bodies_with_a_broken_byte(door: str, data: st.DataObject) -> None:
    decoders, seed = DOORS[door]
    raw = bytearray(msgspec.json.encode(seed))
    position = data.draw(st.integers(0, len(raw) - 1), label="position")
    byte = data.draw(
        st.sampled_from([0x00, 0x80, 0xC0, 0xED, 0xFF, ord('"'), ord("\\"), ord("}")]),
        label="byte",
    )
    if data.draw(st.booleans(), label="insert"):
        raw.insert(position, byte)
    else:
        raw[position] = byte
    only_documented_errors(decoders, bytes(raw))


_SCHEMA = schemathesis.openapi.from_dict(build_document(_route_table()))
_OPERATIONS: dict[str, tuple[str, Decoder]] = {
    "openai_chat": ("/v1/chat/completions", decode_chat_request),
    "anthropic_messages": ("/v1/messages", decode_messages_request),
    "anthropic_count_tokens": ("/v1/messages/count_tokens", decode_count_tokens_request),
}


def _schema_bodies(path: str, mode: GenerationMode) -> st.SearchStrategy[bytes]:
    strategy = _SCHEMA[path]["POST"].as_strategy(generation_mode=mode)

    def encode(case: Any) -> bytes:
        try:
            return msgspec.json.encode(case.body)
        except TypeError:  # no body at all (schemathesis's NOT_SET)
            return b""

    return strategy.map(encode)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("name", sorted(_OPERATIONS))
@fuzz_settings(15)
@given(data=st.data())
def test_bodies_from_the_openapi_schema(
    name: str, mode: GenerationMode, data: st.DataObject
) -> None:
    path, decode = _OPERATIONS[name]
    only_documented_errors((decode,), data.draw(_schema_bodies(path, mode), label="body"))

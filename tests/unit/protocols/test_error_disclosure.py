"""What an error response may carry (issue 13): values a client sent clipped, every message
bounded, the request id when known, never the detail meant for the log; numbers beyond a
double named by their field. Pure code."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from modelport.core.errors import (
    MESSAGE_LIMIT,
    ContextLengthExceeded,
    InternalError,
    InvalidRequest,
    ModelportError,
    UpstreamError,
    client_message,
)
from modelport.protocols.anthropic import errors as anthropic_errors
from modelport.protocols.anthropic.decode import decode_messages_request
from modelport.protocols.openai import errors as openai_errors
from modelport.protocols.openai.decode import decode_chat_request

HUGE = "x" * 1_000_000


def test_a_message_is_bounded_and_carries_the_request_id_but_never_the_detail() -> None:
    error = UpstreamError("m" * 10 * MESSAGE_LIMIT, detail="upstream http://10.0.0.1:8000 boom")
    assert len(client_message(error)) == MESSAGE_LIMIT + 1
    error.request_id = "abc123"
    assert client_message(error).endswith("… (request id abc123)")
    for body in (openai_errors.error_body(error), anthropic_errors.error_body(error)):
        assert b"10.0.0.1" not in body and b"abc123" in body
    anthropic = msgspec.json.decode(anthropic_errors.error_body(error))
    assert anthropic["request_id"] == "abc123"
    assert set(msgspec.json.decode(openai_errors.error_body(error))["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (
            InternalError("backend openai_compat:127.0.0.1:19050 ended its stream without a stop"),
            "Internal server error.",
        ),
        (
            UpstreamError("upstream http://10.9.8.7:8000/v1 failed"),
            "the upstream model server failed",
        ),
        (UpstreamError("upstream stream ended without a finish reason"), None),
        (InvalidRequest("see /srv/docs/x for the schema"), None),  # the client's own 4xx
    ],
)
def test_a_server_failure_that_names_an_address_is_shown_in_general_words(
    error: ModelportError, shown: str | None
) -> None:
    assert client_message(error) == (shown or error.message)


def test_the_context_overflow_wording_claude_code_parses_is_kept_exactly() -> None:
    error = ContextLengthExceeded("too long", prompt_tokens=5, limit=4)
    error.request_id = "abc123"
    assert anthropic_errors.error_message(error) == "prompt is too long: 5 tokens > 4 maximum"


def openai(**fields: Any) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return json.dumps(body).encode().replace(b"Infinity", b"1e400")


def anthropic(**fields: Any) -> bytes:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    return json.dumps({**body, **fields}).encode().replace(b"Infinity", b"1e400")


@pytest.mark.parametrize("field", ["temperature", "top_p", "frequency_penalty"])
def test_a_number_beyond_a_double_is_named_on_the_openai_door(field: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_chat_request(openai(**{field: float("inf")}))
    assert refused.value.param == field


def test_a_number_beyond_a_double_is_named_on_the_anthropic_door() -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_messages_request(anthropic(temperature=float("inf")))
    assert refused.value.param == "temperature"
    assert refused.value.message.startswith("temperature: ")


def test_a_number_beyond_a_double_in_an_unknown_field_is_still_a_400() -> None:
    with pytest.raises(InvalidRequest, match="too large"):
        decode_chat_request(openai(vendor_knob=float("inf")))


@pytest.mark.parametrize("key", [str(2**31), str(2**64), "9" * 5000, "-1", "1e3", "²"])
def test_logit_bias_keys_beyond_a_token_id_are_refused_and_clipped(key: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_chat_request(openai(logit_bias={key: 1}))
    assert refused.value.param == "logit_bias" and len(refused.value.message) < 300


@pytest.mark.parametrize(
    "body",
    [
        openai(messages=[{"role": HUGE, "content": "hi"}]),
        openai(response_format={"type": HUGE}),
        openai(tool_choice={"type": "function", "function": {"name": HUGE}}),
        anthropic(messages=[{"role": "user", "content": [{"type": HUGE}]}]),
        anthropic(system=[{"type": HUGE}]),
        anthropic(tools=[{"name": HUGE, "type": HUGE}]),
        anthropic(tools=[{"name": HUGE, "input_schema": {}}, {"name": HUGE, "input_schema": {}}]),
        anthropic(tool_choice={"type": "tool", "name": HUGE}),
        anthropic(thinking={"type": HUGE}),
    ],
)
def test_values_an_error_repeats_are_clipped(body: bytes) -> None:
    decode = decode_messages_request if b'"max_tokens"' in body else decode_chat_request
    with pytest.raises(InvalidRequest) as refused:
        decode(body)
    assert len(refused.value.message) < 400, refused.value.message[:400]

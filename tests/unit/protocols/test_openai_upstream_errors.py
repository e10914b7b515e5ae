"""Upstream HTTP error answers -> the core error tree; error bodies and Retry-After. Pure code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelport.core.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelportError,
    Overloaded,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from modelport.protocols.openai.upstream_errors import (
    error_detail,
    error_for_status,
    parse_retry_after,
)


def error(status: int, body: Any, retry_after: str | None = None) -> ModelportError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return error_for_status(
        status, raw, upstream="http://up:8000/v1", model="Qwen/Qwen3-8B", retry_after=retry_after
    )


@pytest.mark.parametrize(
    ("status", "body", "kind", "fragment"),
    [
        (
            400,
            {"error": {"message": "temperature must be >= 0"}},
            InvalidRequest,
            "temperature must be >= 0",
        ),
        (
            400,
            {
                "object": "error",
                "message": "This model's maximum context length is 40960 tokens. "
                "However, you requested 50000 tokens",
            },
            ContextLengthExceeded,
            "maximum context length is 40960",
        ),
        (
            400,
            {
                "error": {
                    "message": "the request exceeds the available context size",
                    "type": "exceed_context_size_error",
                }
            },
            ContextLengthExceeded,
            "context size",
        ),
        (
            422,
            {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]},
            InvalidRequest,
            "field required",
        ),
        (401, {"error": {"message": "Incorrect API key"}}, UpstreamError, "credentials"),
        (403, {"error": "forbidden"}, UpstreamError, "HTTP 403"),
        (404, {"error": {"message": "The model `x` does not exist."}}, UpstreamError, "model"),
        (408, b"", UpstreamTimeout, "HTTP 408"),
        (504, b"<html>gateway timeout</html>", UpstreamTimeout, "timed out (HTTP 504)"),
        (500, {"message": "CUDA out of memory"}, UpstreamError, "failed (HTTP 500)"),
        (502, b"", UpstreamError, "HTTP 502"),
    ],
)
def test_http_errors_map_onto_the_error_tree(
    status: int, body: Any, kind: type[ModelportError], fragment: str
) -> None:
    mapped = error(status, body)
    assert type(mapped) is kind
    assert fragment in mapped.message
    # The upstream's address is never shown, its own words only for a refusal the client
    # caused; both are in the detail, for the log.
    assert "http://up:8000" not in mapped.message
    assert mapped.detail is not None and "http://up:8000/v1" in mapped.detail
    shown = status in (400, 422)
    words = error_detail(body if isinstance(body, bytes) else json.dumps(body).encode())
    assert words is None or words in mapped.detail
    assert words is None or (words in mapped.message) is shown


@pytest.mark.parametrize(
    "words",
    [
        "internal boom at /srv/vllm/engine.py line 42",
        "see http://10.9.8.7:8000/docs",
        "connect to 10.9.8.7 failed",
        "worker gpu-node-3.internal:8001 is down",
        'Traceback (most recent call last):\n  File "x", line 1',
        "cannot open C:\\models\\qwen.gguf",
    ],
)
def test_a_client_caused_refusal_that_reveals_internals_is_made_generic(words: str) -> None:
    for status in (400, 422):
        mapped = error(status, {"error": {"message": words}})
        assert type(mapped) is InvalidRequest
        assert mapped.message == f"the upstream model server refused the request (HTTP {status})"
        assert mapped.detail is not None and words in mapped.detail
    overflow = error(400, {"error": {"message": "context length 10 exceeded at /srv/x.py"}})
    assert isinstance(overflow, ContextLengthExceeded)
    assert "/srv" not in overflow.message


@pytest.mark.parametrize(
    "words",
    [
        "temperature must be at most 2",
        "top_k must be >= -1, got 2147483648",
        "max_tokens/max_completion_tokens must be positive",
        "'messages' is a required property",
    ],
)
def test_a_helpful_client_caused_refusal_keeps_its_words(words: str) -> None:
    mapped = error(400, {"error": {"message": words}})
    assert type(mapped) is InvalidRequest and mapped.message == words


def test_a_long_refusal_is_clipped() -> None:
    mapped = error(400, {"error": {"message": "no " * 10_000}})
    assert len(mapped.message) <= 501 and mapped.message.endswith("…")


def test_rate_limits_and_overload_carry_retry_after() -> None:
    limited = error(429, {"error": {"message": "too many"}}, retry_after="7")
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0
    busy = error(503, {"error": {"message": "busy"}}, retry_after="1.5")
    assert isinstance(busy, Overloaded) and busy.retry_after == 1.5
    assert error(429, b"", retry_after=None).retry_after is None


def test_retry_after_as_an_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT") is None  # no clock, no guess
    assert parse_retry_after("soon", now=0.0) is None


def test_error_detail_reads_the_usual_shapes() -> None:
    assert error_detail(b'{"error": {"message": "m1", "type": "t"}}') == "m1"
    assert error_detail(b'{"error": "m2"}') == "m2"
    assert error_detail(b'{"object": "error", "message": "m3"}') == "m3"
    assert error_detail(b'{"detail": "m4"}') == "m4"
    assert error_detail(b"plain text") == "plain text"
    assert error_detail(b"   ") is None
    long = error_detail(b"x" * 5000)
    assert long is not None and len(long) < 600


@pytest.mark.parametrize(
    ("message", "numbers"),
    [
        (
            "This model's maximum context length is 40960 tokens. However, you requested "
            "50000 tokens (49000 in the messages, 1000 in the completion).",
            (50000, 40960),
        ),
        (
            "This model's maximum context length is 40960 tokens. However, your request has "
            "50000 input tokens. Please reduce the length of the input messages.",
            (50000, 40960),
        ),
        ("prompt is too long: 210000 tokens > 200000 maximum", (210000, 200000)),
        ("the request exceeds the available context size", (None, None)),
    ],
)
def test_context_overflow_keeps_the_numbers_when_the_upstream_gives_them(
    message: str, numbers: tuple[int | None, int | None]
) -> None:
    error = error_for_status(
        400, json.dumps({"error": {"message": message}}).encode(), upstream="u", model="m"
    )
    assert isinstance(error, ContextLengthExceeded)
    assert (error.prompt_tokens, error.limit) == numbers

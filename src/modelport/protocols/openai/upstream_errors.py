"""Mapping an upstream's errors onto `core.errors`: a non-2xx HTTP answer (`error_for_status`)
or an error reported inside a stream (`upstream_error`, used by `upstream_stream.py`), plus the
helpers that read error bodies and Retry-After headers. Pure: no I/O.
"""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

import msgspec

from modelport.core.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelportError,
    Overloaded,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)

# Wordings upstreams use for a prompt that does not fit: vLLM/OpenAI ("maximum context length"),
# llama.cpp ("exceeds the available context size"), SGLang ("exceeds the maximum allowed
# length"), Anthropic-style ("prompt is too long").
_CONTEXT_WORDING = re.compile(
    r"context[ _](length|window|size)|prompt is too long|too many tokens"
    r"|exceeds? the (maximum|max)\b.*\blength|exceed_context",
    re.IGNORECASE,
)


# The numbers in vLLM's wording ("maximum context length is 40960 tokens. However, you
# requested 41000 tokens (…)") and in Anthropic's ("prompt is too long: 41000 tokens > 40960
# maximum").
_VLLM_NUMBERS = re.compile(
    r"maximum context length is (\d+) tokens.*?"
    r"(?:requested|resulted in|have|has) (\d+)(?: input)? tokens",
    re.IGNORECASE | re.DOTALL,
)
_ANTHROPIC_NUMBERS = re.compile(r"prompt is too long: (\d+) tokens > (\d+) maximum", re.I)


def _context_exceeded(detail: str) -> ContextLengthExceeded:
    """The error for an upstream's context overflow, with its numbers when it gave them."""
    found = _VLLM_NUMBERS.search(detail)
    if found:
        limit, prompt = int(found.group(1)), int(found.group(2))
        return ContextLengthExceeded(detail, prompt_tokens=prompt, limit=limit)
    found = _ANTHROPIC_NUMBERS.search(detail)
    if found:
        prompt, limit = int(found.group(1)), int(found.group(2))
        return ContextLengthExceeded(detail, prompt_tokens=prompt, limit=limit)
    return ContextLengthExceeded(detail)


def error_for_status(
    status: int,
    body: bytes,
    *,
    upstream: str,
    model: str,
    retry_after: str | None = None,
    now: float | None = None,
) -> ModelportError:
    """The `core.errors` type for an upstream's non-2xx answer (`body` is its raw body)."""
    detail = error_detail(body) or f"HTTP {status} with no message"
    return upstream_error(
        status, detail, None, upstream, model, parse_retry_after(retry_after, now)
    )


def error_detail(body: bytes) -> str | None:
    """The human message inside an upstream error body, in any of the usual shapes."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return clip(body)
    if isinstance(value, dict):
        error = value.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        for candidate in (error, value.get("message"), value.get("detail")):
            if isinstance(candidate, str) and candidate:
                return candidate
        detail = value.get("detail")
        if isinstance(detail, list) and detail:  # FastAPI validation errors
            return clip(msgspec.json.encode(detail))
    return clip(body)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date when `now` is given."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    if now is None:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def upstream_error(
    status: int | None,
    detail: str,
    code: int | str | None,
    upstream: str,
    model: str,
    retry_after: float | None,
) -> ModelportError:
    """The `core.errors` type for an upstream error: an HTTP `status`, or (`status` None) an
    error inside a stream, classified by its `code` or, failing that, its wording."""
    if status is None:
        # Inside a stream: an HTTP-like numeric code, or a code word.
        if isinstance(code, int) and 400 <= code <= 599:
            status = code
        elif isinstance(code, str) and code.isdigit():
            status = int(code)
        elif code == "context_length_exceeded" or _CONTEXT_WORDING.search(detail):
            return _context_exceeded(detail)
        else:
            where = f"upstream {upstream}" if upstream else "upstream"
            return UpstreamError(f"{where} reported an error: {detail}")
    where = f"upstream {upstream}" if upstream else "upstream"
    if status in (400, 413, 422):
        if _CONTEXT_WORDING.search(detail):
            return _context_exceeded(detail)
        return InvalidRequest(detail)
    if status in (401, 403):
        return UpstreamError(
            f"{where} rejected the gateway's credentials (HTTP {status}: {detail}); "
            "check the api_key configured for this backend"
        )
    if status == 404:
        named = f" model {model!r}" if model else " the model"
        return UpstreamError(f"{where} does not serve{named} (HTTP 404: {detail})")
    if status in (408, 504):
        return UpstreamTimeout(f"{where} timed out (HTTP {status}: {detail})")
    if status == 429:
        return RateLimited(f"{where} is rate limiting: {detail}", retry_after=retry_after)
    if status == 503:
        return Overloaded(f"{where} is overloaded: {detail}", retry_after=retry_after)
    return UpstreamError(f"{where} failed with HTTP {status}: {detail}")


def clip(data: bytes, limit: int = 500) -> str:
    """Upstream bytes as short text for an error message."""
    text = data[:limit].decode("utf-8", "replace").strip()
    return text + "…" if len(data) > limit else text

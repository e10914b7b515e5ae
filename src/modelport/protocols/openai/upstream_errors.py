"""Mapping an upstream's errors onto `core.errors`: a non-2xx HTTP answer (`error_for_status`)
or an error reported inside a stream (`upstream_error`, used by `upstream_stream.py`), plus the
helpers that read error bodies and Retry-After headers. Pure: no I/O.

What a client is told (the rule):

- An upstream's failure is the gateway's problem, not the client's: the client gets the
  error's kind and status and a generic message that still says what happened ("the upstream
  model server failed (HTTP 500)", "… timed out", "… is overloaded"), never the upstream's
  address or its own words, which can name hosts, files, stack frames or accounts.
- An upstream's refusal the client caused (HTTP 400, 413 or 422, or a context overflow
  reported inside a stream) keeps the upstream's own message, clipped to 500 characters,
  because it tells the client what to change ("temperature must be at most 2", "maximum
  context length is 40960 tokens…") — unless the message reveals internals (a URL, an IP
  address or host:port, a file path, a traceback or a source line:
  `core.errors.reveals_internals`), when it becomes generic as well ("the upstream model
  server refused the request (HTTP 400)").
- Everything (the upstream's address, its status and raw text) goes into the error's
  `detail`, which the backend writes to the server log in one line with the request id, and
  which no response ever carries.
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
    reveals_internals,
)
from modelport.core.errors import clip as clip_text

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


SERVER = "the upstream model server"
SHOWN_LIMIT = 500  # characters of an upstream's own message a client may be shown
DETAIL_LIMIT = 2000  # characters of it the log keeps


def _context_exceeded(detail: str, internal: str) -> ContextLengthExceeded:
    """The error for an upstream's context overflow, with its numbers when it gave them; the
    upstream's wording when it reveals nothing, else the same in our words."""
    prompt: int | None = None
    limit: int | None = None
    found = _VLLM_NUMBERS.search(detail)
    if found:
        limit, prompt = int(found.group(1)), int(found.group(2))
    else:
        found = _ANTHROPIC_NUMBERS.search(detail)
        if found:
            prompt, limit = int(found.group(1)), int(found.group(2))
    if not reveals_internals(detail):
        message = clip_text(detail, SHOWN_LIMIT)
    elif prompt is not None and limit is not None:
        message = (
            f"This model's maximum context length is {limit} tokens. However, your request "
            f"has {prompt} tokens."
        )
    else:
        message = "The prompt does not fit the model's context."
    return ContextLengthExceeded(message, prompt_tokens=prompt, limit=limit, detail=internal)


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
    """The human message inside an upstream error body, in any of the usual shapes (at most
    DETAIL_LIMIT characters)."""
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
            return clip_text(error["message"], DETAIL_LIMIT)
        for candidate in (error, value.get("message"), value.get("detail")):
            if isinstance(candidate, str) and candidate:
                return clip_text(candidate, DETAIL_LIMIT)
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
    error inside a stream, classified by its `code` or, failing that, its wording. The message
    follows the module's rule; `detail` keeps the upstream's address, status and words."""
    where = f"upstream {upstream}" if upstream else "upstream"
    if status is None:
        # Inside a stream: an HTTP-like numeric code, or a code word.
        if isinstance(code, int) and 400 <= code <= 599:
            status = code
        elif isinstance(code, str) and code.isdigit() and len(code) == 3:
            status = int(code)
        elif code == "context_length_exceeded" or _CONTEXT_WORDING.search(detail):
            return _context_exceeded(detail, f"{where} reported in its stream: {detail}")
        else:
            return UpstreamError(
                f"{SERVER} reported an error while generating",
                detail=f"{where} reported in its stream: {detail}",
            )
    internal = f"{where} answered HTTP {status}: {detail}"
    if status in (400, 413, 422):
        if _CONTEXT_WORDING.search(detail):
            return _context_exceeded(detail, internal)
        if reveals_internals(detail):
            return InvalidRequest(f"{SERVER} refused the request (HTTP {status})", detail=internal)
        return InvalidRequest(clip_text(detail, SHOWN_LIMIT), detail=internal)
    if status in (401, 403):
        return UpstreamError(
            f"{SERVER} refused the gateway's credentials (HTTP {status})",
            detail=f"{internal}; check the api_key configured for this backend",
        )
    if status == 404:
        return UpstreamError(
            f"{SERVER} does not serve this model (HTTP 404)",
            detail=f"{internal}; the upstream model is {model!r}",
        )
    if status in (408, 504):
        return UpstreamTimeout(f"{SERVER} timed out (HTTP {status})", detail=internal)
    if status == 429:
        return RateLimited(
            f"{SERVER} is rate limiting the gateway (HTTP 429); retry later",
            retry_after=retry_after,
            detail=internal,
        )
    if status == 503:
        return Overloaded(
            f"{SERVER} is overloaded (HTTP 503); retry later",
            retry_after=retry_after,
            detail=internal,
        )
    return UpstreamError(f"{SERVER} failed (HTTP {status})", detail=internal)


def clip(data: bytes, limit: int = 500) -> str:
    """Upstream bytes as short text for an error message."""
    text = data[:limit].decode("utf-8", "replace").strip()
    return text + "…" if len(data) > limit else text

"""Errors in the Anthropic shape: `{"type": "error", "error": {"type", "message"}, "request_id"}`.

Maps the one error tree onto Anthropic's error types. Pure: imports only core, msgspec and stdlib.
"""

from __future__ import annotations

from typing import Any

import msgspec

from modelport.core.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    InsufficientBalance,
    InvalidRequest,
    MethodNotAllowed,
    ModelportError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    UpstreamTimeout,
    client_message,
)

# First match wins, so a subclass needing its own type would go before its base.
_TYPES: tuple[tuple[type[ModelportError], str], ...] = (
    (InvalidRequest, "invalid_request_error"),
    (MethodNotAllowed, "invalid_request_error"),
    (AuthenticationFailed, "authentication_error"),
    (InsufficientBalance, "billing_error"),
    (PermissionDenied, "permission_error"),
    (NotFound, "not_found_error"),
    (PayloadTooLarge, "request_too_large"),
    (RateLimited, "rate_limit_error"),
    (Overloaded, "overloaded_error"),  # BackendUnavailable included
    (UpstreamTimeout, "timeout_error"),
)


def error_type(error: ModelportError) -> str:
    """Anthropic's error type for `error`; "api_error" for upstream and internal failures."""
    for cls, name in _TYPES:
        if isinstance(error, cls):
            return name
    return "api_error"


def error_message(error: ModelportError) -> str:
    """The message a client sees (`core.errors.client_message`: bounded, with the request id
    when known; never the detail). A context overflow with both numbers known uses Anthropic's
    own wording exactly, which Claude Code parses to tell the user what happened."""
    if (
        isinstance(error, ContextLengthExceeded)
        and error.prompt_tokens is not None
        and error.limit is not None
    ):
        return f"prompt is too long: {error.prompt_tokens} tokens > {error.limit} maximum"
    return client_message(error)


def error_object(error: ModelportError) -> dict[str, Any]:
    return {"type": error_type(error), "message": error_message(error)}


def error_body(error: ModelportError, request_id: str | None = None) -> bytes:
    """The whole error response body; `request_id` (given, or the error's own) only when
    known."""
    body: dict[str, Any] = {"type": "error", "error": error_object(error)}
    request_id = request_id or error.request_id
    if request_id is not None:
        body["request_id"] = request_id
    return msgspec.json.encode(body)

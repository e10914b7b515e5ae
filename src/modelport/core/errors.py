"""The one error tree. Every layer raises these; each protocol renders them in its own shape.

Imports nothing but the standard library.
"""

from __future__ import annotations

ECHO_LIMIT = 100  # characters of a client's value an error message repeats


def clip(value: object, limit: int = ECHO_LIMIT) -> str:
    """A client's value as an error message may repeat it: at most `limit` characters, then
    "…" (a 1 MB model name must not come back as a 1 MB error)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


class ModelportError(Exception):
    """Base of every error a client can see. `status` is the HTTP status code."""

    status: int = 500
    type: str = "server_error"  # the OpenAI-style error type
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after


class InvalidRequest(ModelportError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ContextLengthExceeded(InvalidRequest):
    """The prompt (with the output it asks for) does not fit the model's context. The numbers,
    where known, let each protocol word it its own way (Anthropic clients parse
    "prompt is too long: N tokens > M maximum")."""

    code = "context_length_exceeded"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        prompt_tokens: int | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.prompt_tokens = prompt_tokens
        self.limit = limit


class AuthenticationFailed(ModelportError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class InsufficientBalance(ModelportError):
    status = 402
    type = "insufficient_balance"
    code = "insufficient_balance"


class PermissionDenied(ModelportError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(ModelportError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(ModelportError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(ModelportError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimited(ModelportError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class InternalError(ModelportError):
    status = 500
    type = "server_error"
    code = "internal_error"


class UpstreamError(ModelportError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class MalformedModelOutput(UpstreamError):
    """The model started a tool call it did not finish correctly (bad JSON, an unknown
    function, cut off): reported, never passed off as text."""

    code = "malformed_tool_call"


class Overloaded(ModelportError):
    status = 503
    type = "overloaded_error"
    code = "overloaded"


class BackendUnavailable(Overloaded):
    """No backend is configured (or none is healthy) for a model that exists in the catalog."""

    type = "service_unavailable"
    code = "model_not_configured"


class UpstreamTimeout(ModelportError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"

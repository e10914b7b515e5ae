"""The one error tree. Every layer raises these; each protocol renders them in its own shape.

Imports nothing but the standard library.
"""

from __future__ import annotations

import re

ECHO_LIMIT = 100  # characters of a client's value an error message repeats
MESSAGE_LIMIT = 2000  # characters of any error message a client is shown (a backstop)


def clip(value: object, limit: int = ECHO_LIMIT) -> str:
    """A client's value as an error message may repeat it: at most `limit` characters, then
    "…" (a 1 MB model name must not come back as a 1 MB error)."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = repr(value)
        except ValueError:  # an integer too long to write out (over 4,300 digits)
            return "…"
    return text if len(text) <= limit else text[:limit] + "…"


class ModelportError(Exception):
    """Base of every error a client can see. `status` is the HTTP status code.

    `message` is what the client is shown; `detail` is what only the server log (and so the
    operator) sees: an upstream's address and raw error text, never rendered into a response.
    `request_id`, when set, is rendered with the message so a client can quote it and an
    operator find the log line that carries the detail."""

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
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after
        self.detail = detail
        self.request_id: str | None = None


# What tells a client about the deployment: a URL, an IP address, a host with a port, a file
# path (Unix or Windows), a traceback or a source line. `protocols/openai/upstream_errors`
# states the rule for upstream messages; here it is also the last check on the gateway's own.
_INTERNALS = re.compile(
    r"[a-z][a-z0-9+.-]*://"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}\b"
    r"|\b(?:localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+):\d{2,5}\b"
    r"|(?:^|[\s'\"(\[=:,])/[\w.@~-]+/"
    r"|\b[a-z]:\\"
    r"|traceback|\bfile \"|\.py\b|\bline \d+",
    re.IGNORECASE,
)


def reveals_internals(text: str) -> bool:
    """Whether `text` says something about the deployment (an address, a path, a source
    line): such text goes to the server log, never to a client."""
    return _INTERNALS.search(text) is not None


def client_message(error: ModelportError) -> str:
    """The message a response carries: `error.message`, cut at MESSAGE_LIMIT characters
    (whatever a message repeats, a response stays small), with the request id when known.
    A server-side failure (5xx) whose message still names an address or a path (a backend's
    name is its host and port) is shown in general words; the words are the log's."""
    message = clip(error.message, MESSAGE_LIMIT)
    if error.status >= 500 and reveals_internals(message):
        upstream = isinstance(error, UpstreamError | UpstreamTimeout | Overloaded)
        message = "the upstream model server failed" if upstream else "Internal server error."
    if error.request_id is not None:
        message = f"{message} (request id {error.request_id})"
    return message


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
        detail: str | None = None,
    ) -> None:
        super().__init__(message, param=param, detail=detail)
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


class RequestTimeout(InvalidRequest):
    """The request body did not arrive in the time allowed (the server then closes the
    connection)."""

    status = 408
    code = "request_timeout"


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


class CircuitOpen(Overloaded):
    """Every backend of the model failed lately (their circuits are open): refused at once,
    with Retry-After, until one is tried again."""

    code = "backend_unavailable"


class BackendUnavailable(Overloaded):
    """No backend is configured (or none is healthy) for a model that exists in the catalog."""

    type = "service_unavailable"
    code = "model_not_configured"


class UpstreamTimeout(ModelportError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"

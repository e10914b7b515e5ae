"""What one HTTP request did, gathered as it runs: for its access log line, its metrics and
every other log line written while it runs.

The server interface makes a `Trace` per request and makes it current (`CURRENT`, a context
variable, so tasks the request spawns see it too: a settlement after the client left fills
the same trace); the metering stage fills in who paid, the model, the backend, tokens, cost
and the outcome. Plain data: no I/O here.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Any

# An incoming X-Request-Id is kept when it looks like an id (it goes into logs, usage rows
# and the upstream's request head): letters, digits and . _ : - only, at most 128 of them.
_VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def valid_request_id(value: str | None) -> bool:
    return value is not None and _VALID_ID.fullmatch(value) is not None


class Trace:
    """One request's facts; None where not (yet) known."""

    __slots__ = (
        "account_id",
        "backend",
        "cached_tokens",
        "completion_tokens",
        "cost_nano",
        "door",
        "error_kind",
        "error_status",
        "generation_id",
        "key_id",
        "model",
        "prompt_tokens",
        "reasoning_tokens",
        "request_id",
        "settling",
        "supplied",
        "ttft_ms",
    )

    def __init__(self, request_id: str, *, supplied: bool = False, door: str = "other") -> None:
        self.request_id = request_id
        # Whether the client sent the id (then a generation gets an id of its own, since a
        # client may send one id with several requests).
        self.supplied = supplied
        self.door = door
        self.generation_id: str | None = None
        self.account_id: int | None = None
        self.key_id: int | None = None
        self.model: str | None = None
        self.backend: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.reasoning_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.cost_nano: int | None = None
        self.ttft_ms: float | None = None
        # The error that ended the request, as the error tree names it ("upstream_error"…),
        # and its status: for a stream that failed after its 200 went out, the status the
        # error would have had.
        self.error_kind: str | None = None
        self.error_status: int | None = None
        # A settlement still running when the request's handler ended (its client left and
        # what was relayed is being counted): an asyncio future, or None.
        self.settling: Any = None

    def fail(self, kind: str, status: int) -> None:
        """Record the error that ended the request (the first one wins)."""
        if self.error_kind is None:
            self.error_kind = kind
            self.error_status = status


CURRENT: ContextVar[Trace | None] = ContextVar("modelport_trace", default=None)


def current() -> Trace | None:
    return CURRENT.get()
